"""Where a model came from: one ``ModelRef`` for every ``models:/`` URI, resolved to one version.

Every module that names a registered model (the promotion controller, deployments, monitors,
gates) builds and reads these URIs through :class:`ModelRef` instead of slicing strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlops_plugin.errors import RegistryError

MODELS_SCHEME = "models:/"


@dataclass(frozen=True)
class ModelRef:
    """A registered model by name and version or alias (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``).

    Any other URI (``runs:/``, ``models:/m-<id>``, a local path) is kept as ``uri`` with no name.
    """

    uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    tags: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Read ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, a bare ``NAME@ALIAS`` or any other URI."""
        if not text:
            raise RegistryError("an empty model URI")
        if not text.startswith(MODELS_SCHEME):
            if "@" in text and "/" not in text and ":" not in text:  # the monitor's NAME@ALIAS shorthand
                text = MODELS_SCHEME + text
            else:
                return cls(text)
        body = text[len(MODELS_SCHEME):]
        if body.startswith("m-") and "@" not in body and "/" not in body:  # a logged model id (MLflow 3)
            return cls(text)
        if "@" in body:
            name, alias = body.split("@", 1)
            if not name or not alias or "/" in alias:
                raise RegistryError(f"{text}: write models:/NAME@ALIAS")
            return cls(text, name=name, alias=alias)
        name, _, version = body.partition("/")
        if not name:
            raise RegistryError(f"{text}: no model name")
        return cls(text, name=name, version=version or None)

    @classmethod
    def of(cls, name: str, *, version: str | int | None = None, alias: str | None = None) -> ModelRef:
        """The URI of ``name`` at ``version`` or ``alias`` (exactly one)."""
        if (version is None) == (alias is None):
            raise RegistryError(f"{name}: give a version or an alias, not {'both' if version else 'neither'}")
        if alias is not None:
            return cls(f"{MODELS_SCHEME}{name}@{alias}", name=name, alias=alias)
        return cls(f"{MODELS_SCHEME}{name}/{version}", name=name, version=str(version))

    @property
    def registered(self) -> bool:
        """True when the URI names a registered model."""
        return self.name is not None

    @property
    def download_uri(self) -> str:
        """What to download: the pinned version once resolved, else the URI as given."""
        if self.name is not None and self.version is not None:
            return f"{MODELS_SCHEME}{self.name}/{self.version}"
        return self.uri

    def at_alias(self, alias: str) -> ModelRef:
        """The same registered model at another alias."""
        if self.name is None:
            raise RegistryError(f"{self.uri} is not a registered model URI")
        return ModelRef.of(self.name, alias=alias)

    def __str__(self) -> str:
        return self.uri


def client():
    """An ``MlflowClient`` for the current tracking and registry URIs."""
    from mlflow import MlflowClient

    return MlflowClient()


def resolve_model_uri(model_uri: str | ModelRef) -> ModelRef:
    """Pin ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` to one version; pass others through.

    Resolving first, then downloading ``models:/NAME/VERSION``, means the loaded artifact and
    the version we report can't disagree even if the alias moves during the download.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.utils.models import _parse_model_uri

    ref = model_uri if isinstance(model_uri, ModelRef) else ModelRef.parse(model_uri)
    if not ref.registered:
        return ref
    try:
        parsed = _parse_model_uri(ref.download_uri if ref.alias is None else ref.uri)
    except MlflowException as exc:
        raise RegistryError(str(exc)) from exc
    if parsed.version is None and parsed.alias is None:
        raise RegistryError(f"{ref.uri}: stages and 'latest' are ambiguous; use models:/NAME/VERSION "
                            "or models:/NAME@ALIAS")
    mlflow_client = client()
    try:
        if parsed.alias is not None:
            mv = mlflow_client.get_model_version_by_alias(parsed.name, parsed.alias)
        else:
            mv = mlflow_client.get_model_version(parsed.name, str(parsed.version))
    except MlflowException as exc:
        raise RegistryError(f"{ref.uri}: {exc.message}") from exc
    return ModelRef(ref.uri, parsed.name, str(mv.version), parsed.alias, dict(mv.tags or {}))


# the name this record had before ModelRef
ResolvedModelUri = ModelRef
