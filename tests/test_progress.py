"""Progress bars draw on a terminal only, and only when the caller wants progress."""

import io

import pytest

from etspipe.progress import on_terminal, progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream, enabled, draws", [
    (FakeTerminal(), True, True),
    (FakeTerminal(), False, False),
    (io.StringIO(), True, False),  # a log file or a pipe
])
def test_bar_draws_only_on_a_terminal_when_enabled(stream, enabled, draws):
    assert list(progress_bar(range(3), enabled=enabled, file=stream, desc="work")) == [0, 1, 2]
    assert ("work" in stream.getvalue()) is draws


def test_a_stream_without_isatty_or_closed_is_not_a_terminal():
    closed = io.StringIO()
    closed.close()
    assert not on_terminal(closed) and not on_terminal(object())
