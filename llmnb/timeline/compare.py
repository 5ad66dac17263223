"""Pictures without a live widget: a finished timeline as saved notebooks keep it, and several
timelines compared on one time axis. Both show as an SVG (text/html) with the text form beside it
(text/plain), which JupyterLab, Notebook 7, VS Code, Colab, nbconvert and GitHub all render."""

from __future__ import annotations

from pathlib import Path

from . import render


class Picture:
    """Display rules shared by the static pictures: subclasses give to_svg and to_text."""

    def to_svg(self) -> str:
        raise NotImplementedError

    def to_text(self) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": self.to_text(), "text/html": self.to_svg()}

    def __repr__(self) -> str:
        return self.to_text()

    def save_svg(self, path) -> Path:
        path = Path(path)
        path.write_text(self.to_svg(), encoding="utf-8")
        return path


class Static(Picture):
    """A timeline's final picture, without the widget: what the saved notebook keeps."""

    def __init__(self, timeline):
        self._timeline = timeline

    def to_svg(self) -> str:
        return self._timeline.to_svg()

    def to_text(self) -> str:
        return self._timeline.to_text()


class Comparison(Picture):
    """Timelines one under another on a shared time axis, each with its title and summary.
    Each starts at 0 s (its own start), so their lengths compare directly."""

    def __init__(self, timelines, title: str | None = None):
        if not timelines:
            raise ValueError("compare needs at least one timeline: Timeline.compare(serial, concurrent)")
        strays = [type(t).__name__ for t in timelines if not hasattr(t, "_view")]
        if strays:
            raise TypeError(f"compare takes Timeline objects, not {', '.join(strays)}")
        self.timelines = list(timelines)
        self.title = title or " vs ".join(t.title for t in self.timelines)

    def _blocks(self) -> list[render.Block]:
        return [(t.title, t._view()) for t in self.timelines]

    def to_svg(self) -> str:
        return render.svg(self._blocks(), self.title)

    def to_text(self) -> str:
        return f"{self.title}\n{render.text(self._blocks())}"
