"""Series labels that name what tells the series drawn apart, and nothing more.

A series is a method (with its sanity check) and its settings. Its label is the method,
then in parentheses the settings that differ between the series drawn with it, shortest
first: ``gem-miner (lam=0.0001, prune.epochs=10)``. ``model`` and ``dataset`` are named on
every series as soon as they vary, so no curve of one model or data set is read as
another's; other settings are named on the series of the same method among which they
vary, and only as many as tell those series apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

#: Named on every series when they vary among the series drawn.
CONTEXT = ("model", "dataset")


def setting_text(name: str, value: str | None) -> str:
    """``settings.lam``, ``"0.0001"`` → ``lam=0.0001``; a missing value reads ``default``,
    a training subset of 0 images (the whole training set) ``full``."""
    name = name.removeprefix("settings.")
    if value is None:
        return f"{name}=default"
    text = json.loads(value)
    if name == "train_size" and text == 0:
        return f"{name}=full"
    return f"{name}={text if isinstance(text, str) else value}"


def distinguishing_labels(series: Sequence[tuple[str, Mapping[str, str]]]) -> list[str]:
    """A label per series, given as (base name, settings as JSON texts), in order.

    Within each base name (a method and sanity check), the settings that vary are taken
    shortest first, and one is kept only when it separates series that those kept so far
    (and the context, :data:`CONTEXT`) do not: a setting that always changes together with
    a shorter one adds nothing. The kept ones are listed shortest first.
    """
    values = [dict(s) for _, s in series]
    everyone = list(range(len(series)))

    def varies(name: str, members: Sequence[int]) -> bool:
        return len({values[i].get(name) for i in members}) > 1

    def width(name: str, members: Sequence[int]) -> tuple[int, str]:
        return max(len(setting_text(name, values[i].get(name))) for i in members), name

    def split(blocks: list[list[int]], name: str) -> list[list[int]]:
        out = []
        for block in blocks:
            parts: dict[str | None, list[int]] = {}
            for i in block:
                parts.setdefault(values[i].get(name), []).append(i)
            out += parts.values()
        return out

    context = [name for name in CONTEXT if varies(name, everyone)]
    families: dict[str, list[int]] = {}
    for i, (base, _) in enumerate(series):
        families.setdefault(base, []).append(i)
    shown: dict[int, list[str]] = {}
    for members in families.values():
        blocks = [members]
        for name in context:
            blocks = split(blocks, name)
        names = {n for i in members for n in values[i]} - set(CONTEXT)
        kept = list(context)
        for name in sorted(
            (n for n in names if varies(n, members)), key=lambda n: width(n, members)
        ):
            if any(varies(name, block) for block in blocks):
                kept.append(name)
                blocks = split(blocks, name)
        kept.sort(key=lambda n: width(n, members))
        for i in members:
            shown[i] = [setting_text(n, values[i].get(n)) for n in kept]
    return [
        f"{base} ({', '.join(shown[i])})" if shown[i] else base
        for i, (base, _) in enumerate(series)
    ]
