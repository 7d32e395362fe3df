"""Typed domain errors of the deployments app; core.errors renders them as the API envelope."""

from core.errors import InvalidRequest, NotFound


class DeploymentNotFound(NotFound):
    """No deployment with that id in the caller's organization and workspace."""


class DeploymentArchived(InvalidRequest):
    """The deployment is archived: it can no longer be updated, paused, unpaused or run."""

    def __init__(self, deployment_id: str):
        super().__init__(f"deployment {deployment_id} is archived and can no longer be modified")
        self.deployment_id = deployment_id


class LimitExceeded(InvalidRequest):
    """The organization already has as many scheduled deployments as it may."""

    def __init__(self, *, limit: int, count: int):
        super().__init__(
            f"schedule: the organization already has {count} scheduled deployments and the limit is {limit}; "
            "archive a scheduled deployment or remove its schedule first"
        )
        self.limit = limit
        self.count = count


class ScheduleInvalid(InvalidRequest):
    """The cron expression or time zone is not valid; the message names which."""
