import getpass
import sys

from django.core.management.base import BaseCommand, CommandError

from accounts_app.errors import UpstreamCredentialsInvalid
from accounts_app.models import Organization
from accounts_app.services import (
    MAX_UPSTREAM_API_KEY_LENGTH,
    organization_upstream_credentials_clear,
    organization_upstream_credentials_set,
)

# A line longer than this is not a key; reading stops there instead of taking whatever is piped in.
READ_LIMIT = 2 * MAX_UPSTREAM_API_KEY_LENGTH


class Command(BaseCommand):
    help = (
        "Set the organization's own API key for the remote Managed Agents platform (SESSION_GATEWAY=anthropic), "
        "read from standard input (one line), or remove it with --clear. The key is stored encrypted and never printed."
    )
    # call_command(..., stdin=...) hands the command its input (tests); otherwise sys.stdin.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("--organization", required=True, help="Organization name")
        parser.add_argument("--base-url", default=None, help="Base URL of the remote platform (http or https)")
        parser.add_argument("--clear", action="store_true", help="Remove the organization's own credentials")

    def handle(self, *args, organization, base_url=None, clear=False, **options):
        try:
            org = Organization.objects.get(name=organization)
        except Organization.DoesNotExist:
            raise CommandError(f"organization {organization!r} does not exist") from None
        if clear:
            if base_url is not None:
                raise CommandError("--clear removes the key and the base URL together; do not pass --base-url with it")
            organization_upstream_credentials_clear(organization=org)
            self.stdout.write(f"upstream credentials of {org.name} cleared")
            return
        api_key = self._read_key(options.get("stdin") or sys.stdin)
        try:
            org = organization_upstream_credentials_set(organization=org, api_key=api_key, base_url=base_url)
        except UpstreamCredentialsInvalid as exc:
            raise CommandError(exc.message) from None
        shown = f"key …{org.upstream_api_key_last4}" if org.upstream_api_key_last4 else "key too short to show any of it"
        where = f", base URL {org.upstream_base_url}" if org.upstream_base_url else ""
        self.stdout.write(f"upstream credentials of {org.name} stored ({shown}{where})")

    def _read_key(self, stream) -> str:
        if _is_terminal(stream):
            # Typed by hand: not echoed, so it stays out of the terminal's scrollback.
            line = getpass.getpass("Upstream API key (input hidden): ")
        else:
            line = stream.readline(READ_LIMIT + 1)
        key = line.strip()
        if not key:
            raise CommandError(
                "no API key on standard input: pipe it in, for example "
                "`printf '%s\\n' \"$KEY\" | python manage.py set_upstream_credentials --organization NAME`"
            )
        if len(key) > MAX_UPSTREAM_API_KEY_LENGTH:
            raise CommandError(f"api_key: must be at most {MAX_UPSTREAM_API_KEY_LENGTH} characters")
        return key


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
