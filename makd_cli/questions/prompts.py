"""The papers' prompts, adapted to ask for one item at a time as JSON.

Small local models write one well-formed item far more reliably than a list of fifty, and a JSON
schema turns their output into something we can check. The wording of each rule is the papers'.
"""

from __future__ import annotations

from makd_cli.formats.questions import PLACEHOLDER

# lavid.txt appendix A.5 (rules 2-10), for one question with M options.
MCQ_RULES = """Your task:
1. Generate 1 question for distinguishing between the classes in a dataset with the requirements below.
2. The question should be centered around visual concepts while slight deviation is acceptable. An example of a deviation would be about the environment.
3. The question should have {m} answer options and each class can only have one correct answer option. Its best to maximize the number classes that each pick a different answer option.
4. The question should contain the class in the question, written as the placeholder {placeholder}.
5. Questions should maximize the separation between classes like a decision tree maximizing entropy.
6. Use your understanding of all of the classes and their visual differences to create the question.
7. Do not repeat questions.
8. Do not write code.
9. Do not include class names in the answer options.
The classes:
{classes}
{avoid}Output format: a JSON object {{"question": "...", "options": [{m} strings]}}."""

MCQ_EXAMPLES = [
    ("The classes:\nCardinal, European Goldfinch, American Goldfinch, Blue Jay, Common Raven",
     '{"question": "What is the main color of the head of the <object>?", "options": ["red", "yellow", "blue", "black", "red, white and black"]}'),
    ("The classes:\nsedan, pickup truck, minivan, convertible, school bus",
     '{"question": "How many seats does a typical <object> have?", "options": ["two", "four to five", "seven to eight", "more than twenty", "it has no seats"]}'),
]

# makd.txt section 3.1.
YESNO_SYSTEM = "You are a good question maker."
YESNO_GENERATE = (
    "The dataset consists of {c} classes and {n_images} images. The class list is as follows: {classes}, "
    "Generate 1 feature-specific yes or no question, focusing on clear and distinct aspects of the objects in the "
    "images in the dataset. Write the object as {placeholder}. {avoid}"
    'Output format: a JSON object {{"question": "..."}}.'
)
YESNO_EXAMPLES = [
    ("The class list is as follows: Cardinal, Blue Jay, Common Raven",
     '{"question": "Does the <object> have a crest on its head?"}'),
    ("The class list is as follows: sedan, pickup truck, school bus",
     '{"question": "Does the <object> have an open cargo bed?"}'),
]
YESNO_SELECT = (
    "Select {q} of the most relevant and distinct questions from the list, focusing on various key features that "
    "distinguish different class in the dataset. Rank them from most to least important.\n{listing}\n"
    'Output format: a JSON object {{"selected": [{q} question numbers]}}.'
)

# LEAD: one description per class within CLIP's text limit.
DESCRIPTION_PROMPT = (
    "Describe what a {name} looks like in a photo, in one or two sentences, focusing on the visual features that "
    "tell it apart from these other classes: {others}. Use fewer than {limit} words. "
    'Output format: a JSON object {{"description": "..."}}.'
)


def mcq_messages(classes: list[str], m: int, avoid: list[str]) -> list[dict]:
    avoid_text = ("Do not repeat these questions:\n" + "\n".join(f"- {a}" for a in avoid[-15:]) + "\n") if avoid else ""
    rules = MCQ_RULES.format(m=m, placeholder=PLACEHOLDER, classes=", ".join(classes), avoid=avoid_text)
    messages = []
    for user, assistant in MCQ_EXAMPLES:
        example_rules = MCQ_RULES.format(m=5, placeholder=PLACEHOLDER, classes="", avoid="").split("The classes:")[0]
        messages += [{"role": "user", "content": example_rules + user}, {"role": "assistant", "content": assistant}]
    return messages + [{"role": "user", "content": rules}]


def yesno_messages(classes: list[str], n_images: int, avoid: list[str]) -> list[dict]:
    avoid_text = ("Do not repeat these questions: " + " | ".join(avoid[-15:]) + ". ") if avoid else ""
    messages = [{"role": "system", "content": YESNO_SYSTEM}]
    for user, assistant in YESNO_EXAMPLES:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    text = YESNO_GENERATE.format(c=len(classes), n_images=n_images, classes=", ".join(classes), placeholder=PLACEHOLDER, avoid=avoid_text)
    return messages + [{"role": "user", "content": text}]


def select_messages(questions: list[str], q: int) -> list[dict]:
    listing = "\n".join(f"{i + 1}. {t}" for i, t in enumerate(questions))
    return [{"role": "system", "content": YESNO_SYSTEM}, {"role": "user", "content": YESNO_SELECT.format(q=q, listing=listing)}]


def description_messages(name: str, classes: list[str], limit_words: int) -> list[dict]:
    others = ", ".join(c for c in classes if c != name)
    return [{"role": "user", "content": DESCRIPTION_PROMPT.format(name=name, others=others, limit=limit_words)}]


def prompt_fingerprint(kind: str) -> str:
    """A hash of the prompt templates of a kind, recorded in each question's source."""
    from makd_cli.fileio import sha256_text

    parts = {
        "mcq": MCQ_RULES + repr(MCQ_EXAMPLES),
        "yesno": YESNO_SYSTEM + YESNO_GENERATE + repr(YESNO_EXAMPLES) + YESNO_SELECT,
        "description": DESCRIPTION_PROMPT,
    }
    return sha256_text(parts[kind])[:16]
