"""Run configs: YAML files that name components by dotted path (`_component_: mtl.head.Classify`) and hold
only plain values. `load_config` checks one against the components' signatures without building anything;
`build_run` builds the objects; `mtl train|eval CONFIG.yaml` (mtl/cli.py) runs them."""
from mtl.config.build import Run, build_eval_run, build_run, instantiate
from mtl.config.schema import RunConfig, TaskSection, load_config, validate_config

__all__ = ["RunConfig", "TaskSection", "Run", "load_config", "validate_config", "build_run", "build_eval_run",
           "instantiate"]
