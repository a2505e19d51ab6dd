"""One exception tree for provision. Every error carries a hint: what to do next.

```
ProvisionError                      exit 1 unless noted
├── ManifestError (ValueError)      exit 2: the manifest is wrong (file:line, field)
├── UsageError (ValueError)         exit 2: the command line or an API call is wrong (options, sampling, deployment)
├── LockError                       --locked refused a change
│   └── InvalidLockError            exit 2: the lock file is unreadable or not what provision wrote
├── ConcurrencyError                another provision holds this manifest's lock
├── PreflightError                  the machine cannot take the change (disk, engine, port, GPU)
├── SourceError                     a model could not be resolved or fetched
│   ├── RepositoryNotFoundError (FileNotFoundError)
│   ├── RevisionNotFoundError (FileNotFoundError)
│   ├── EntryNotFoundError (FileNotFoundError)
│   ├── GatedRepoError (PermissionError)
│   ├── HubUnreachableError (ConnectionError)
│   ├── IntegrityError              bytes (or their size) do not match what the hub published
│   └── DownloadError               transient failures outlived the retries
├── DeploymentError                 a deployment could not be created or is unhealthy
│   └── EngineUnavailableError (ConnectionError)   Docker / Ollama not reachable
├── StateError                      the state file is unreadable
│   └── InvalidStateError           exit 2: the state file is not what provision wrote
├── OwnershipError                  a folder provision did not create, or another manifest owns
└── RenderError                     exit 2: no lock yet, or a field with no meaning in the target
```

Sources and deployment backends raise these, never bare ``KeyError``/``ValueError``; the CLI maps them to one
line plus the hint (a traceback only with ``PROVISION_DEBUG=1``).
"""

from __future__ import annotations

from . import exitcodes


class ProvisionError(Exception):
    """Base class. ``resource`` names the model or deployment, when there is one."""

    exit_code = exitcodes.FAILED
    default_hint = ""

    def __init__(self, message: str, *, hint: str | None = None, resource: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.resource = resource

    def __str__(self) -> str:
        prefix = f"{self.resource}: " if self.resource else ""
        return f"{prefix}{self.message}"


class ManifestError(ProvisionError, ValueError):
    """The manifest is invalid; ``location`` is ``file:line`` and ``field`` a dotted path."""

    exit_code = exitcodes.USAGE

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.file = file
        self.line = line
        self.field = field

    @property
    def location(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}"
        return self.file or ""

    def __str__(self) -> str:
        where = self.location
        field = f"{self.field}: " if self.field else ""
        return f"{where}: {field}{self.message}" if where else f"{field}{self.message}"


class UsageError(ProvisionError, ValueError):
    """A bad request: contradicting options, an unknown deployment, a sampling value out of range."""

    exit_code = exitcodes.USAGE


class LockError(ProvisionError):
    default_hint = "run `provision apply --update` without --locked to refresh the lock file, and commit it"


class InvalidLockError(LockError):
    """The lock file is not one provision wrote: wrong types, unsafe paths, bad digests."""

    exit_code = 2
    default_hint = "restore the lock file from version control, or delete it and run `provision apply --update`"


class ConcurrencyError(ProvisionError):
    default_hint = "wait for the other run to finish, or stop it"


class PreflightError(ProvisionError):
    pass


class SourceError(ProvisionError):
    pass


class RepositoryNotFoundError(SourceError, FileNotFoundError):
    default_hint = "check the repository id in `source:`; a private repo needs a token"


class RevisionNotFoundError(SourceError, FileNotFoundError):
    default_hint = "check `revision:` (a branch, tag or full commit that exists on the hub)"


class EntryNotFoundError(SourceError, FileNotFoundError):
    default_hint = "the file was listed but the hub does not serve it; retry later or run `provision apply --update`"


class GatedRepoError(SourceError, PermissionError):
    default_hint = "accept the model's terms on the hub, then give a token (export HF_TOKEN=..., or `hf auth login`)"


class HubUnreachableError(SourceError, ConnectionError):
    default_hint = "check the endpoint in settings (or HF_ENDPOINT / MODELSCOPE_ENDPOINT) and your network or mirror"


class IntegrityError(SourceError):
    default_hint = "the hub or a proxy served altered bytes; retry later or use another endpoint"


class DownloadError(SourceError):
    default_hint = "the transfer kept failing; run `provision apply` again: it resumes where it stopped"


class DeploymentError(ProvisionError):
    pass


class EngineUnavailableError(DeploymentError, ConnectionError):
    pass


class StateError(ProvisionError):
    default_hint = "the state file is damaged; move it aside (see `provision status --help` for its path)"


class RenderError(ProvisionError):
    """The manifest cannot be rendered for the target (a field with no meaning there, no lock yet)."""

    exit_code = 2


class InvalidStateError(StateError):
    """The state file is not one provision wrote: wrong types, paths outside models_dir."""

    exit_code = 2


class OwnershipError(ProvisionError):
    """A folder provision did not create (or another manifest owns) is in the way."""

    default_hint = "move the folder aside, point the model elsewhere, or set `adopt: true` on the model"
