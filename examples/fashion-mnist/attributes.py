"""Write the demo's reference teacher: a hand-written yes/no attribute table for Fashion-MNIST.

attributes.csv holds one common-knowledge question per row and p(yes) for each of the ten classes
(0, 1, or 0.5 where it depends on the garment). This script turns it into makd's own formats with
makd's own writers, then reads both files back with makd's readers:

    questions.jsonl  (docs/formats.md: questions, kind yesno)
    attributes.h5    (docs/formats.md: targets, kind class_yesno; teacher "hand-written")

    python attributes.py [--out DIR]        # default: this folder (the files are also committed)

The oracle row of `make demo` trains on attributes.h5: what a teacher that knows the classes gives.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from makd_cli.data.fashion_mnist import CLASSES
from makd_cli.errors import MakdError
from makd_cli.fileio import sha256_file
from makd_cli.formats.questions import Question, read_questions, write_questions
from makd_cli.formats.targets import Targets, read_targets, write_targets

HERE = Path(__file__).resolve().parent


def read_table(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], [r for r in rows[1:] if r]
    if header[1:] != CLASSES:
        raise MakdError(f"{path}: the columns after 'question' must be Fashion-MNIST's classes in order: {CLASSES}")
    texts = [r[0] for r in body]
    probs = np.array([[float(v) for v in r[1:]] for r in body]).T  # classes x questions
    return texts, probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=HERE / "attributes.csv")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    texts, probs = read_table(args.table)
    questions = [Question("yesno", t, source={"model": "hand-written", "table": args.table.name}) for t in texts]
    args.out.mkdir(parents=True, exist_ok=True)
    qpath, tpath = args.out / "questions.jsonl", args.out / "attributes.h5"
    write_questions(qpath, questions)
    write_targets(tpath, Targets("class_yesno", list(CLASSES), [q.id for q in questions], probs, teacher="hand-written",
                                 questions_sha256=sha256_file(qpath), meta={"source": args.table.name}))
    back = read_targets(tpath)  # makd's readers check both formats
    assert [q.id for q in read_questions(qpath, kind="yesno")] == back.question_ids
    back.check_classes(list(CLASSES))
    print(f"{len(questions)} questions x {len(CLASSES)} classes -> {qpath}, {tpath}")


if __name__ == "__main__":
    main()
