"""The few-shot conversation of one question (LLaMA-Factory's evaluator style).

Each example is a previous user turn (question, choices, "Answer:") answered by an assistant turn holding the letter;
the question is the last user turn. The subject header goes in front of the first user turn.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunery.eval.benchmark import CHOICES, Question


@dataclass(frozen=True)
class PromptStyle:
    header: str  # before the first user turn; {subject} is the subject's display name
    choice: str  # one line per choice: {letter}, {text}
    answer: str  # after the choices


STYLES = {
    "en": PromptStyle("The following are multiple choice questions (with answers) about {subject}.\n\n",
                      "\n{letter}. {text}", "\nAnswer:"),
    "zh": PromptStyle("以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n", "\n{letter}. {text}", "\n答案："),
}


def question_text(question: Question, style: PromptStyle) -> str:
    """The user turn of one question: the question, its choices, then the answer cue."""
    lines = [question.question]
    lines += [style.choice.format(letter=letter, text=text) for letter, text in zip(CHOICES, question.choices)]
    return "".join(lines) + style.answer


def build_messages(question: Question, shots: list, subject_name: str, style: PromptStyle) -> list[dict]:
    """user/assistant turns for the examples, then the question as the last user turn (no answer)."""
    messages = []
    for shot in shots:
        messages.append({"role": "user", "content": question_text(shot, style)})
        messages.append({"role": "assistant", "content": shot.answer})
    messages.append({"role": "user", "content": question_text(question, style)})
    messages[0] = {"role": "user", "content": style.header.format(subject=subject_name) + messages[0]["content"]}
    return messages
