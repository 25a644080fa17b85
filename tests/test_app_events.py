"""Events built from handlers: inputs by parameter name, outputs from the `Outputs` returned, and a
page that cannot be built when a parameter has no component."""

from collections.abc import Iterator

import gradio as gr
import pytest

from iqa.app.events import Components, inputs, outputs, parameters, result_type
from iqa.app.messages import shown_as_message
from iqa.app.outputs import RankOutput, ZipOutput


class _Handlers:
    @shown_as_message
    def rank(self, session, threshold: float, event: gr.SelectData, progress=gr.Progress()) -> RankOutput:
        raise AssertionError("not called")

    def stream(self, session) -> Iterator[ZipOutput]:
        yield ZipOutput(None)

    def plain(self, prompts) -> str:
        return ""


def test_inputs_follow_the_parameters_and_leave_out_what_gradio_fills():
    h = _Handlers()
    ui = Components(session="S", threshold="T", ranking="R", results_csv="C", kept_zip="Z", prompts="P")
    assert parameters(h.rank) == ["session", "threshold"]  # not the event nor the progress bar
    assert inputs(h.rank, ui) == ["S", "T"] and outputs(h.rank, ui) == ["R", "C"]
    assert result_type(h.stream) is ZipOutput and outputs(h.stream, ui) == ["Z"]
    assert result_type(h.plain) is None
    with pytest.raises(TypeError, match="returns no Outputs"):
        outputs(h.plain, ui)


def test_a_parameter_without_a_component_fails_when_the_page_is_built():
    with pytest.raises(KeyError, match="_Handlers.rank: no component for parameter.s. threshold"):
        inputs(_Handlers().rank, Components(session="S"))
    with pytest.raises(KeyError, match="no component named 'results_csv'"):
        outputs(_Handlers().rank, Components(ranking="R"))
