"""How one run of the agent is configured: the graph's runtime context.

Settings reach the nodes by one route. Where a command or request starts, the ``CAIRN_*`` settings
and that run's overrides are resolved into a ``Context`` once (``Context.from_settings``), and nodes
read ``runtime.context``. Each field takes its type, bounds, default and description from the
``Settings`` field it mirrors, so the two cannot drift apart, and LangGraph Studio shows the same
descriptions. Callers that can only send ``configurable`` (LangServe's playground) have it read as
the context by ``run_context``, the one place that does so.
"""

from __future__ import annotations

import copy
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Literal, cast

from langgraph.config import get_config
from langgraph.runtime import Runtime
from pydantic import Field, SecretStr
from pydantic.dataclasses import dataclass, is_pydantic_dataclass
from pydantic.fields import FieldInfo

from cairn.errors import CairnError
from config import MODEL_NODES, Settings
from ingest.repos import ALL, Repositories, default_repo
from models import ModelConfig, embedded_base_url, parse_model_spec
from retrievers import IndexSpec, check_retriever

#: Tokens of the context window kept back for the prompt's own text (instructions, question, markup).
PROMPT_OVERHEAD_TOKENS = 600


def _setting(name: str) -> Any:
    """A field with the type bounds, default and description of the setting CAIRN_<NAME>."""
    info: FieldInfo = copy.copy(Settings.model_fields[name])
    info.json_schema_extra = {"setting": f"CAIRN_{name.upper()}"}
    return info


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


def _mirrored_setting(info: FieldInfo) -> str | None:
    """Return the name of the setting a field mirrors (``CAIRN_<NAME>``, put there by ``_setting``), or None."""
    extra = info.json_schema_extra
    setting = extra.get("setting") if isinstance(extra, dict) else None
    return setting if isinstance(setting, str) else None


def _fields(cls: type) -> dict[str, FieldInfo]:
    """Return the fields of a pydantic dataclass (set by pydantic's decorator, which type checkers do not see)."""
    assert is_pydantic_dataclass(cls), f"{cls.__name__} is not a pydantic dataclass"
    return cls.__pydantic_fields__


@dataclass(kw_only=True)
class Context:
    """Per-run settings of the agent; ``Context.from_settings`` fills them from CAIRN_* plus overrides."""

    model: str = _setting("model")
    plan_model: str | None = _setting("model_plan")
    analyze_model: str | None = _setting("model_analyze")
    refine_model: str | None = _setting("model_refine")
    answer_model: str | None = _setting("model_answer")
    fallback_model: str | None = _setting("model_fallback")
    temperature: float = _setting("model_temperature")
    max_tokens: int = _setting("model_max_tokens")
    judge_max_tokens: int = _setting("model_judge_max_tokens")
    context_tokens: int = _setting("model_context_tokens")
    structured_output: Literal["auto", "json_schema", "json_object_schema", "none"] = _setting(
        "model_structured_output"
    )
    model_timeout: float = _setting("model_timeout")
    model_max_retries: int = _setting("model_max_retries")
    model_api_key: SecretStr | None = _setting("model_api_key")
    embedded_url: str = Field(
        default=embedded_base_url(_default("embedded_host"), _default("embedded_port")),
        description="Base URL of the embedded model server (CAIRN_EMBEDDED_HOST and CAIRN_EMBEDDED_PORT).",
    )
    retriever: str = _setting("agent_retriever")
    k: int = _setting("agent_k")
    max_rounds: int = _setting("agent_max_rounds")
    plan: Literal["auto", "model", "question"] = _setting("agent_plan")
    hyde: bool = _setting("agent_hyde")
    rerank: bool = _setting("rerank")
    rerank_model: str | None = _setting("rerank_model")
    rerank_top_n: int = _setting("rerank_top_n")
    rerank_api_key: SecretStr | None = _setting("rerank_api_key")
    prompt_layout: Literal["shared", "compact"] = _setting("agent_prompt_layout")
    use_tools: bool = _setting("agent_use_tools")
    tools: list[str] | None = _setting("tools")
    mcp_servers: dict[str, dict[str, Any]] = _setting("mcp_servers")
    index_dir: str = Field(
        default=str(Path(_default("data_dir")) / "index"), description="The index folder to search (CAIRN_INDEX_DIR)."
    )
    repo: str | None = Field(
        default=None,
        description=(
            "The repository to search: a name under DATA_DIR/repos, '*' for all of them (results fused, citations "
            "prefixed with the repository's name), or unset for index_dir (CAIRN_DEFAULT_REPO)."
        ),
    )
    data_dir: str = Field(
        default=str(_default("data_dir")), description="The data folder whose repos/ holds the repositories."
    )
    index_memory_mb: int = _setting("index_memory_mb")
    embedding_model: str = _setting("embedding_model")
    embedding_device: str = _setting("embedding_device")
    embedding_backend: Literal["auto", "onnx", "torch"] = _setting("embedding_backend")
    embedding_query_threads: int = _setting("embedding_query_threads")
    hnsw_ef_search: int = _setting("hnsw_ef_search")
    ivf_nprobe: int = _setting("ivf_nprobe")
    rrf_k: int = _setting("rrf_k")
    fusion_depth: int = _setting("fusion_depth")
    stop: list[str] | None = Field(default=None, description="Sequences that end the answer.")

    # ------------------------------------------------------------ building

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Context:
        """Resolve the settings plus per-run overrides (None: not overridden) into a checked Context.

        The repository is the default one (``ingest.repos.default_repo``) unless ``repo`` or
        ``index_dir`` is overridden.
        """
        values: dict[str, Any] = {
            name: getattr(settings, setting.removeprefix("CAIRN_").lower())
            for name, info in _fields(cls).items()
            if (setting := _mirrored_setting(info)) is not None
        }
        values["embedded_url"] = embedded_base_url(settings.embedded_host, settings.embedded_port)
        values["index_dir"] = str(settings.resolved_index_dir)
        values["data_dir"] = str(settings.data_dir)
        # an index folder given for this run (the eval's corpus) is that folder, not the default repository
        values["repo"] = None if overrides.get("index_dir") is not None else default_repo(settings)
        values.update({name: value for name, value in overrides.items() if value is not None})
        return cls(**values).checked()

    def checked(self) -> Context:
        """Return self after checking the names in it: model settings parse, the retriever exists."""
        for spec in self.model_specs():
            parse_model_spec(spec)
        check_retriever(self.retriever)
        return self

    def override(self, **changes: Any) -> Context:
        """Return a copy with ``changes`` applied (None values are ignored)."""
        return replace(self, **{name: value for name, value in changes.items() if value is not None})

    @classmethod
    def with_defaults(cls, defaults: Context) -> type[Context]:
        """Return a Context class whose field defaults are ``defaults``'s values.

        LangGraph Studio builds a run's context from the fields a user set and the schema's defaults;
        a graph compiled with this schema fills the rest from the settings resolved at load.
        """
        namespace: dict[str, Any] = {"__annotations__": {}, "__doc__": cls.__doc__, "__module__": cls.__module__}
        for name, info in _fields(cls).items():
            field_info = copy.copy(info)
            field_info.default = getattr(defaults, name)
            field_info.default_factory = None
            namespace["__annotations__"][name] = info.annotation
            namespace[name] = field_info
        # pydantic's decorator is typed to return type[PydanticDataclass]; what it returns is this subclass of cls
        return cast("type[Context]", dataclass(kw_only=True)(type(cls.__name__, (cls,), namespace)))

    # ------------------------------------------------------------ what nodes derive from it

    def node_model(self, node: str) -> str:
        """Return the model spec a node uses: its own field, else ``model``."""
        return getattr(self, f"{node}_model", None) or self.model

    def model_specs(self) -> list[str]:
        """Return every model spec this run may call: each model node's, then the fallback's."""
        specs = [self.node_model(node) for node in MODEL_NODES]
        return list(dict.fromkeys([*specs, *([self.fallback_model] if self.fallback_model else [])]))

    def model_config(self, node: str) -> ModelConfig:
        """Return the client configuration of a node's model (answer: max_tokens; others: judge_max_tokens)."""
        return ModelConfig(
            spec=self.node_model(node),
            fallback=self.fallback_model,
            temperature=self.temperature,
            max_tokens=self.max_tokens if node == "answer" else self.judge_max_tokens,
            timeout=self.model_timeout,
            max_retries=self.model_max_retries,
            context_tokens=self.context_tokens,
            embedded_url=self.embedded_url,
            api_key=self.model_api_key.get_secret_value() if self.model_api_key else None,
            structured_output=self.structured_output,
        )

    def repositories(self) -> Repositories:
        """Return the repositories of the run's data folder."""
        return Repositories.in_data_dir(self.data_dir)

    @property
    def spans_repos(self) -> bool:
        """True when the run searches every repository (``repo`` is ``*``)."""
        return self.repo == ALL

    def index_spec(self, repo: str | None = None) -> IndexSpec:
        """Return which index to search (the run's, or a named repository's) and how to embed queries for it.

        Raises UnknownRepository (listing the names) for a repository that does not exist.
        """
        name = repo or self.repo
        if name == ALL:
            raise CairnError("This run spans every repository, not one index", "use index_specs(), or name one")
        index_dir = Path(self.index_dir) if name is None else self.repositories().get(name)
        return IndexSpec(index_dir, self.embedding_model, self.embedding_device, self.hnsw_ef_search,
                         nprobe=self.ivf_nprobe, memory_budget_bytes=self.index_memory_mb * 1024 * 1024,
                         embedding_backend=self.embedding_backend, onnx_dir=Path(self.data_dir) / "onnx",
                         query_threads=self.embedding_query_threads)  # fmt: skip

    def index_specs(self) -> dict[str, IndexSpec]:
        """Return repository name → index spec of every index the run searches ("" for ``index_dir``)."""
        if self.repo is None:
            return {"": self.index_spec()}
        return {name: self.index_spec(name) for name in self.repositories().resolve(self.repo)}

    @property
    def repo_label(self) -> str:
        """Return what the run talks about, as sessions record it: the repository name, ``*``, or the index folder."""
        return self.repo if self.repo is not None else self.index_dir

    @property
    def document_tokens(self) -> int:
        """Tokens of retrieved code that fit the answer prompt (window minus answer, history and overhead)."""
        window = self.context_tokens
        return max(256, window - self.max_tokens - PROMPT_OVERHEAD_TOKENS - self.history_tokens)

    @property
    def history_tokens(self) -> int:
        """Tokens of earlier conversation kept for plan and answer."""
        return self.context_tokens // 8

    def as_configurable(self) -> dict[str, Any]:
        """Return the fields as a ``configurable`` mapping (how LangServe carries a run's settings)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def run_context(runtime: Runtime[Context] | None) -> Context:
    """Return the run's Context: the runtime's, or one read from ``configurable`` when none was passed.

    LangServe invokes the graph with a config only; the service puts its resolved Context there
    (``as_configurable``) and a client's own ``configurable`` overrides it field by field.
    """
    if runtime is not None and runtime.context is not None:
        return runtime.context
    try:
        configurable = get_config().get("configurable") or {}
    except RuntimeError:
        configurable = {}
    names = {f.name for f in fields(Context)}
    return Context(**{k: v for k, v in configurable.items() if k in names and v is not None})
