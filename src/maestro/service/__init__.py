"""Every domain rule of Maestro: defaults, timestamps, hierarchy, task<->session links, events.

Adapters (HTTP, WebSocket, CLI, launcher) call these methods with parsed JSON bodies; the methods
validate everything first, then change memory through a `Tx`, and return once the change is
durable and its events are published. Reads are served from memory and its indexes.

The Service is composed of one part per job: `core` (memory, life cycle, the mutation path,
health), `projects`, `tasks`, `sessions`, `links` (task<->session links), `workspaces` (session
workspace records), and the parts kept beside it: `listing` (paged reads), `coordination`
(dependencies, readiness, claims) and `plan`. The pure rules they apply live in `maestro.domain`."""

from __future__ import annotations

from ..coordination import Coordination
from ..listing import Listing
from ..plan import Planning
from .core import MAX_ENTRY_BYTES, ServiceCore
from .links import Links
from .projects import Projects
from .sessions import Sessions
from .tasks import Tasks
from .workspaces import WorkspaceRecords

__all__ = ["MAX_ENTRY_BYTES", "Service"]


class Service(ServiceCore, Projects, Tasks, Sessions, Links, Listing, Coordination,
              WorkspaceRecords, Planning):
    """The one entry point of every adapter (see the module's docstring)."""
