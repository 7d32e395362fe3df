"""A workaround for kombu's Redis transport (5.7.0) that otherwise kills a worker when Redis restarts.

When the broker connection drops while a worker holds unacknowledged messages (every fire waiting
for its jitter countdown is one) and a BRPOP is pending, Celery's consumer closes the broken
connection twice: `Connection.collect()` then `Connection.close()`. In the first pass
`Channel.close()` starts by draining the pending BRPOP, which raises ConnectionError before the
channel is marked closed; the error is swallowed and the transport forgets its client. The second
pass closes the channel for real, tries to restore the unacknowledged messages, builds a Redis
pool from the forgotten client and raises AttributeError — not a connection error, so the worker
stops with "Unrecoverable error". Found by the fault-injection suite (scenario 4, Redis restarted
mid-burst); reproduced 5 times out of 5 with an idle worker holding countdown messages.

The fix: when closing fails on a connection error, finish closing at once (the BRPOP is no
longer pending), while the transport still has its client. Messages that cannot be restored to
a broker that is down are recovered from PostgreSQL by the scheduler's recovery sweep.
"""

import functools


def patch_redis_channel_close() -> None:
    from kombu.transport import redis

    original = redis.Channel.close
    if getattr(original, "_closes_after_connection_errors", False):
        return

    @functools.wraps(original)
    def close(self):
        try:
            original(self)
        except self.connection_errors:
            if self.closed:
                raise
            original(self)

    close._closes_after_connection_errors = True
    redis.Channel.close = close
