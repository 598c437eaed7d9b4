"""PlanSpec is the one source of the plan parameters: make_plan, the run config and the CLI."""

import argparse
import dataclasses

import pytest

from spectrumkd.curriculum import PlanSpec, make_plan, make_plan_from_spec, plan_keywords
from spectrumkd.curriculum.spec import spec_from_keywords

IDS = [f"x{i}" for i in range(40)]
SCORES = [float((i * 7) % 40) + 0.5 for i in range(40)]


def test_make_plan_is_the_keyword_form_of_make_plan_from_spec():
    spec = PlanSpec(kind="spectrumkd", epochs=6, warmup_epochs=1, lambda_a=0.2, step="linear")
    by_spec = make_plan_from_spec(spec, IDS, SCORES)
    by_keywords = make_plan("spectrumkd", IDS, SCORES, epochs=6, warmup=1, lambda_a=0.2,
                            step="linear")
    assert by_spec.to_dict() == by_keywords.to_dict()
    assert by_spec.params["warmup"] == 1  # plan files keep their spelling


def test_keywords_round_trip_and_aliases():
    spec = PlanSpec(kind="none", warmup_epochs=2, static_range=[0.1, 0.9], auto_lambda=True)
    kw = plan_keywords(spec)
    assert kw["kind"] == "full" and kw["warmup"] == 2 and kw["lambda_a"] == kw["lambda_b"] == "auto"
    assert (kw["static_low"], kw["static_high"]) == (0.1, 0.9)
    back = spec_from_keywords(**kw)
    assert (back.kind, back.warmup_epochs, back.static_range) == ("full", 2, [0.1, 0.9])
    with pytest.raises(TypeError, match="warmpu"):
        make_plan("full", IDS, SCORES, warmpu=1)
    with pytest.raises(TypeError, match="not both"):
        spec_from_keywords("static", static_low=0.1, static_range=[0.0, 0.5])


def test_none_is_the_full_plan():
    a = make_plan("none", IDS, SCORES, epochs=2).to_dict()
    assert a == make_plan("full", IDS, SCORES, epochs=2).to_dict()


def test_defaults_are_the_papers_and_the_run_config_inherits_the_fields():
    from spectrumkd.train.config import CurriculumConfig

    spec = PlanSpec()
    assert (spec.epochs, spec.warmup_epochs, spec.lambda_a, spec.lambda_b) == (25, 5, 0.1, 0.1)
    assert (spec.tau0, spec.taun, spec.step, spec.direction) == (1.0, 2.0, "adaptive", "forward")
    plan_fields = {f.name for f in dataclasses.fields(PlanSpec)}
    config_fields = {f.name for f in dataclasses.fields(CurriculumConfig)}
    assert plan_fields < config_fields
    assert config_fields - plan_fields == {"metric", "reduction", "batch_tokens"}
    cfg = CurriculumConfig()
    assert (cfg.epochs, cfg.warmup_epochs) == (5, 1)  # the run config's short default


def test_plan_options_and_help_come_from_the_fields():
    from spectrumkd.commands import plan as plan_command
    from spectrumkd.commands.options import field_docs

    parser = argparse.ArgumentParser()
    plan_command.add_arguments(parser)
    dests: dict = {}
    for action in parser._actions:  # the option built from the field comes before any alias
        dests.setdefault(action.dest, action)
    docs = field_docs(PlanSpec)
    for f in dataclasses.fields(PlanSpec):
        assert f.name in dests, f.name
        assert docs[f.name] and dests[f.name].help.startswith(docs[f.name]), f.name
    args = parser.parse_args(["--scores", "s", "--out", "o", "--warmup", "2", "--baseline",
                              "static", "--static-range", "0.1:0.7", "--lambda", "auto"])
    assert (args.warmup_epochs, args.kind, args.static_range) == (2, "static", [0.1, 0.7])
    assert args.auto_lambda is True
    defaults = parser.parse_args(["--scores", "s", "--out", "o"])
    assert {f.name: getattr(defaults, f.name) for f in dataclasses.fields(PlanSpec)} == \
        dataclasses.asdict(PlanSpec())
