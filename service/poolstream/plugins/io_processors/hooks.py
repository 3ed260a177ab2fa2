"""How to call one plugin's hooks: which API era each hook is from, and which keywords it takes.

vLLM renamed its hooks twice (E1 ``parse_request``/``validate_or_generate_params``,
E2 ``parse_data``/``merge_pooling_params``, E3 adds a renderer to the constructor).
``PluginHooks`` looks once, at startup, at what the plugin's class defines and calls
that, with vLLM's arguments for that era:

- parsing: ``parse_request(<the whole request>)`` when the plugin defines it (E1: online
  the ``IOProcessorRequest``, offline the whole prompt dict), else ``parse_data(<data>)``;
- params: ``merge_pooling_params(params)`` when defined, else
  ``validate_or_generate_params(params)``;
- the optional keywords ``request`` (vLLM's meaning: the raw ``IOProcessorRequest``) and
  ``parsed_request`` (poolstream's: what parsing returned) go only to hooks whose
  signature names them or takes ``**kwargs``; a hook without them is called without
  them, never failed for it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from poolstream.plugins.io_processors.interface import IOProcessor, _overrides

OPTIONAL_KWARGS = ("request", "parsed_request")


def accepted_kwargs(func: Callable[..., Any], names: tuple[str, ...] = OPTIONAL_KWARGS) -> frozenset[str]:
    """The subset of ``names`` that ``func`` accepts as keywords."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return frozenset(names)
    return frozenset(
        p.name for p in params
        if p.name in names and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


@dataclass(frozen=True)
class PluginHooks:
    """The era and keywords of each hook of one plugin instance."""

    parse_name: str  # "parse_request" or "parse_data"
    params_name: str  # "validate_or_generate_params" or "merge_pooling_params"
    era: str  # "E1", "E2" or "E3": the newest interface the plugin uses
    default_pre: bool  # pre_process_async is the base class's (runs pre_process)
    default_post: bool  # post_process_async is the base class's (collects, runs post_process)
    kwargs: Mapping[str, frozenset[str]]  # hook name -> optional keywords it accepts

    @classmethod
    def of(cls, processor: IOProcessor, takes_renderer: bool = False) -> "PluginHooks":
        parse_name = "parse_request" if _overrides(processor, "parse_request") else "parse_data"
        params_name = (
            "merge_pooling_params" if _overrides(processor, "merge_pooling_params")
            else "validate_or_generate_params"
        )
        if takes_renderer:
            era = "E3"
        elif parse_name == "parse_data" or params_name == "merge_pooling_params":
            era = "E2"
        else:
            era = "E1"
        names = (
            parse_name, params_name, "pre_process", "pre_process_async", "post_process",
            "post_process_async", "output_to_response",
        )
        kwargs = {name: accepted_kwargs(getattr(processor, name)) for name in names}
        return cls(
            parse_name=parse_name,
            params_name=params_name,
            era=era,
            default_pre=type(processor).pre_process_async is IOProcessor.pre_process_async,
            default_post=type(processor).post_process_async is IOProcessor.post_process_async,
            kwargs=kwargs,
        )

    def extra(self, hook: str, **candidates: Any) -> dict[str, Any]:
        """The keyword arguments among ``candidates`` that ``hook`` accepts."""
        accepted = self.kwargs.get(hook, frozenset())
        return {k: v for k, v in candidates.items() if k in accepted}

    def parse(self, processor: IOProcessor, whole_request: Any, data: Any) -> Any:
        if self.parse_name == "parse_request":
            return processor.parse_request(whole_request)
        return processor.parse_data(data)

    def params(self, processor: IOProcessor, params: Any, **candidates: Any) -> Any:
        hook = getattr(processor, self.params_name)
        return hook(params, **self.extra(self.params_name, **candidates))
