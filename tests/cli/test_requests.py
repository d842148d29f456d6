"""The typed front door: every option the parser has is a field of its command's request, every numeric one has
a range rule, and the rules refuse what they should (no torch, no model: these run in milliseconds)."""

from __future__ import annotations

import argparse
import math
from dataclasses import fields

import pytest

from advbridge.arguments import build_parser
from advbridge.bridge.errors import InvalidParameterError
from advbridge.cli import COMMANDS, request_of
from advbridge.experiments.requests import CompareRequest, DefendRequest, Rule, StudyRequest, check_count

#: Parser-only options: how the CLI logs, not what a command does.
CLI_ONLY = {"help", "debug", "command", "version"}
#: Options given as text that are numbers (eps and step sizes as fractions; lists of numbers).
NUMERIC_TEXT = {"eps", "step_size", "train_eps", "train_step_size", "eps_grid", "mean", "std"}


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p for name, p in action.choices.items() if name in COMMANDS}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_is_a_field_and_every_number_has_a_rule(command):
    request_type, _ = COMMANDS[command]
    by_name = {f.name: f for f in fields(request_type)}
    for action in subparsers()[command]._actions:
        if action.dest in CLI_ONLY:
            continue
        assert action.dest in by_name, f"{command} --{action.dest} is not a field of {request_type.__name__}"
        numeric = action.type in (int, float) or action.dest in NUMERIC_TEXT
        rule = by_name[action.dest].metadata.get("rule")
        assert (rule is not None) == numeric, f"{command} --{action.dest}: numeric {numeric}, rule {rule}"
        if action.default is not None and rule is not None:  # the parser's default passes its own rule
            rule.check(action.dest, action.default)


def test_parsed_defaults_build_each_request_and_keep_the_values():
    parser = build_parser()
    request = request_of(parser.parse_args(["compare", "--attack", "pgd", "--eps", "8/255", "--n", "7"]))
    assert isinstance(request, CompareRequest)
    assert (request.attack, request.eps, request.n, request.gamma) == ("pgd", "8/255", 7, 0.05)
    request = request_of(parser.parse_args(["defend", "--defense", "median", "--attack", "pgd", "--size", "3"]))
    assert isinstance(request, DefendRequest) and (request.size, request.restarts, request.fpr) == (3, 10, 0.05)
    request = request_of(parser.parse_args(["audit"]))
    assert (request.restarts, request.steps, request.fpr) == (5, 40, None)  # audit's own defaults, not defend's
    assert isinstance(request_of(parser.parse_args(["study", "mnist-cifar10-vae", "--n", "3"])), StudyRequest)


@pytest.mark.parametrize(
    ("rule", "good", "bad"),
    [
        (Rule(low=1, integer=True), [1, 10**6], [0, -1, 1.5, True, math.inf]),
        (Rule(low=0, high=1, low_open=True, high_open=True), [0.5, 1e-9], [0, 1, math.nan, math.inf, -math.inf]),
        (Rule(low=0, high=1, high_open=True), [0, 0.999], [1, -1e-9]),
        (Rule(low=0, low_open=True, eps=True), ["8/255", "0.3", 2.0], ["0", "-1/255", "inf", "nan", "1/0", "x"]),
        (Rule(low=0, low_open=True, many=True), ["0.1,0.2", "1/255, 2/255"], ["0.1,nan", "0.1,-1", ",", "a,b"]),
    ],
)
def test_rules_take_the_range_and_refuse_the_rest(rule, good, bad):
    for value in good:
        rule.check("--x", value)
    for value in bad:
        with pytest.raises(InvalidParameterError, match=r"^expected --x as .*, got "):
            rule.check("--x", value)


def test_request_names_the_first_bad_option_and_the_accepted_range():
    with pytest.raises(InvalidParameterError, match=r"expected --threshold as a finite number >= 0, got inf"):
        DefendRequest(defense="recon-detect", attack="pgd", threshold=math.inf)
    with pytest.raises(InvalidParameterError, match=r"expected --seed as an int in \[0, 2\*\*63\), got -1"):
        CompareRequest(attack="pgd", seed=-1)
    with pytest.raises(InvalidParameterError, match="expected restarts as an int >= 1, got 0"):
        check_count("restarts", 0)
