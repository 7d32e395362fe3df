"""The webhooks API takes the beta the official SDK sends there (`webhooks-2026-10-07`, alone)."""

WEBHOOKS_BETA = "webhooks-2026-10-07"
