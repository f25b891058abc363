"""Specs of the faster DSPy callback dispatch: what DSPy's own would do, for less."""

from __future__ import annotations

import inspect
import uuid

import dspy
import pytest
from dspy.utils.callback import BaseCallback
from dspy.utils.dummies import DummyLM

from adaptd.adapters import dspy_dispatch


def f_plain(self, a, b=2, *, c, d=4): ...
def f_star(self, *args, **kwargs): ...
def f_mixed(self, a, /, b, *rest, key=None, **extra): ...
def f_none(self): ...
def f_defaults(self, a=1, b=2, c=3): ...


CALLS = [
    (f_plain, (1,), {"c": 3}), (f_plain, (1, 5), {"c": 3, "d": 0}), (f_plain, (), {"a": 1, "c": 3}),
    (f_plain, (1,), {}), (f_plain, (1, 2, 3), {"c": 1}), (f_plain, (1,), {"a": 1, "c": 3}),
    (f_plain, (1,), {"c": 3, "zz": 0}), (f_plain, (), {"c": 3}),
    (f_star, (), {}), (f_star, (1, 2), {"x": 3}), (f_star, (), {"self": 1}),
    (f_mixed, (1, 2, 3, 4), {"key": 5, "other": 6}), (f_mixed, (1,), {"b": 2}), (f_mixed, (), {}),
    (f_none, (), {}), (f_none, (1,), {}), (f_none, (), {"a": 1}),
    (f_defaults, (), {}), (f_defaults, (9,), {"c": 7}), (f_defaults, (), {"b": 0}),
]  # fmt: skip


def outcome(fn, *args, **kwargs):
    try:
        return "ok", list(fn(*args, **kwargs).items())  # the order of keys counts too
    except TypeError as exc:
        return "error", str(exc)


@pytest.mark.parametrize(("func", "args", "kwargs"), CALLS)
def test_getcallargs_gives_inspects_mapping_in_its_order_or_raises_its_error(func, args, kwargs):
    instance = object()
    expected = outcome(inspect.getcallargs, func, instance, *args, **kwargs)
    assert outcome(dspy_dispatch.getcallargs, func, instance, *args, **kwargs) == expected
    assert outcome(dspy_dispatch.getcallargs, func, instance, *args, **kwargs) == expected  # cached


def test_getcallargs_notices_changed_defaults():
    def fn(self, a=1): ...

    assert dspy_dispatch.getcallargs(fn, None) == {"self": None, "a": 1}
    fn.__defaults__ = (2,)
    assert dspy_dispatch.getcallargs(fn, None) == {"self": None, "a": 2}


def test_dspy_dispatch_is_swapped_in_and_restored_whole():
    import dspy.utils.callback as callback_module

    dspy_dispatch.uninstall()
    try:
        assert callback_module.inspect is inspect and callback_module.uuid is uuid
        assert dspy_dispatch.install() and dspy_dispatch.install()  # idempotent
        assert callback_module.inspect.getcallargs is dspy_dispatch.getcallargs
        assert callback_module.inspect.iscoroutinefunction is inspect.iscoroutinefunction
        call_id = callback_module.uuid.uuid4().hex
        assert len(call_id) == 32 and int(call_id, 16) >= 0
        dspy_dispatch.uninstall()
        assert callback_module.inspect is inspect and callback_module.uuid is uuid
        assert not dspy_dispatch.installed()
    finally:
        dspy_dispatch.install()


class Recorder(BaseCallback):
    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def on_module_start(self, call_id, instance, inputs):
        self.seen.append(("module_start", type(instance).__name__, sorted(inputs), len(call_id)))

    def on_module_end(self, call_id, outputs, exception=None):
        self.seen.append(("module_end", type(outputs).__name__, exception))

    def on_lm_start(self, call_id, instance, inputs):
        self.seen.append(("lm_start", sorted(inputs)))

    def on_adapter_format_start(self, call_id, instance, inputs):
        self.seen.append(("format_start", sorted(inputs)))

    def on_adapter_parse_start(self, call_id, instance, inputs):
        self.seen.append(("parse_start", sorted(inputs)))


def test_a_callback_sees_the_same_calls_and_inputs_with_either_dispatch():
    def record() -> list[tuple]:
        recorder = Recorder()
        lm = DummyLM([{"reasoning": "r", "answer": "a"}] * 2)
        with dspy.context(lm=lm, callbacks=[recorder]):
            dspy.ChainOfThought("question -> answer")(question="q")
        return recorder.seen

    dspy_dispatch.uninstall()
    try:
        plain = record()
        assert dspy_dispatch.install()
        assert record() == plain and len(plain) >= 7
    finally:
        dspy_dispatch.install()
