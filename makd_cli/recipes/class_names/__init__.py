"""The class names that go into prompts (``--class-names``): makd's reader names, or a reference's own list.

The targets' rows keep makd's class names (training reads them); only the prompt text changes, so a
local extraction with ``--class-names lavid`` sends the reference's prompts byte for byte: LaViD's Pets
are lowercase ("abyssinian", where makd reads "Abyssinian"), and Caltech-101's ``Faces`` and
``Faces easy`` are both asked about as "face". The lists are LaViD's files (README.md here).
"""

from __future__ import annotations

import json
from importlib import resources

from makd_cli.errors import MakdError

SOURCES = ("folder", "lavid", "makd")
# makd's dataset name -> the LaViD list its classes are asked by (Waterbirds: CUB's species, as LaViD's questions/waterbird/)
LAVID_LISTS = {"aircraft": "aircraft", "caltech101": "caltech101", "caltech101-lavid": "caltech101", "cars": "cars", "cub": "cub",
               "flowers": "flowers", "pets": "pets", "waterbirds": "cub"}
# makd class name -> LaViD's, where normalising case, spaces and underscores does not find it (checked on the
# published targets; the same maps as examples/caltech101 and examples/flowers pass to `makd import targets`)
KNOWN_RENAMES = {
    "caltech101": {"Faces": "face", "Faces easy": "face", "Leopards": "leopard", "Motorbikes": "motorbike", "airplanes": "airplane"},
    "flowers": {"pink-yellow dahlia?": "pink-yellow dahlia", "lotus": "lotus lotus"},
}


def lavid_list(name: str) -> list[str]:
    f = resources.files(__package__) / f"lavid-{name}.json"
    return list(json.loads(f.read_text(encoding="utf-8")))


def prompt_names(source: str, classes: list[str], dataset: str | None = None) -> list[str]:
    """The name each class (makd's list, in order) is asked by. ``dataset``: makd's dataset name (``cub``), or
    None to find the LaViD list that holds every class."""
    if source not in SOURCES:
        raise MakdError(f"--class-names {source!r}: choose {', '.join(SOURCES)}")
    if source == "folder":
        return list(classes)
    if source == "makd":
        raise MakdError("--class-names makd: MaKD's repository publishes no class list (its per-image prompts, "
                        "\"<image>\\n\" + question, name no class); use folder (makd's names) or lavid")
    from makd_cli.interop.lavid import match_classes

    names = sorted(set(LAVID_LISTS.values())) if dataset is None else [LAVID_LISTS.get(dataset)]
    if names == [None]:
        raise MakdError(f"--class-names lavid: LaViD has no class list for {dataset}; it covers {', '.join(sorted(LAVID_LISTS))}")
    last = None
    for name in names:
        ref = lavid_list(name)
        renames = {k: v for k, v in KNOWN_RENAMES.get(name, {}).items() if k in classes}
        try:
            chosen, _ = match_classes(ref, list(classes), renames, f"LaViD's {name} list")
            return chosen
        except MakdError as exc:
            last = exc
    if dataset is None:
        raise MakdError("--class-names lavid: the classes match none of LaViD's lists "
                        f"({', '.join(sorted(set(LAVID_LISTS.values())))}); give --data NAME:PATH or --class-names folder")
    raise last
