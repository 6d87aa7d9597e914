"""An Ollama `Modelfile` for an exported model: FROM ., a Go-template TEMPLATE derived from the Tunery template's
slots (so that Ollama formats chats exactly as the model was trained), SYSTEM and one `PARAMETER stop` per stop word.

The TEMPLATE uses Ollama's `.System` and `.Messages` (Role user / assistant / tool). Tool descriptions and tool calls
are not written (Ollama's `.Tools` has no counterpart in the slots); a template that numbers rounds ({{idx}}) or a
Jinja-only template (`template: tokenizer`) gets no TEMPLATE line: Ollama then reads the tokenizer's chat template.
"""

from __future__ import annotations

import json
import re
from typing import Optional

_PLACEHOLDER = re.compile(r"(\{\{content\}\}|\{\{idx\}\})")


def _literal(text: str) -> str:
    """Text as a Go template literal: only `{{` needs escaping, as an action printing the two braces."""
    return text.replace("{{", '{{ "{{" }}')


class _Writer:
    def __init__(self, template, tokenizer):
        self.t, self.tokenizer = template, tokenizer

    def slot(self, slot, content: str) -> Optional[str]:
        """A slot as Go template text, {{content}} replaced by the action `content` (None if {{idx}} is used)."""
        from tunery.data.templates import Special, Token

        out = []
        for elem in slot:
            if isinstance(elem, Special):
                out.append(_literal(self.t._special(elem, self.tokenizer)))
            elif isinstance(elem, Token):
                out.append(_literal(elem.text))
            else:
                done = False
                for piece in _PLACEHOLDER.split(elem):
                    if piece == "{{idx}}":
                        return None
                    if piece == "{{content}}" and not done:  # the renderer fills the first occurrence only
                        out.append(content)
                        done = True
                    elif piece:
                        out.append(_literal(piece))
        return "".join(out)

    def template(self) -> Optional[str]:
        t = self.t
        prefix = self.slot(t.prefix, "")
        system = self.slot(t.system, "{{ $sys }}")
        user = self.slot(t.user, "{{ .Content }}")
        assistant = self.slot(t.assistant, "{{ .Content }}")
        tool = self.slot(t.observation, "{{ .Content }}")
        separator = self.slot(t.separator, "")
        if None in (prefix, system, user, assistant, tool, separator):
            return None
        if t.system_in_user:  # llama2 style: the system text opens the first user message
            first_system = self.slot(t.system[:1], "{{ $sys }}")
            user_turn = ("{{ if $sys }}" + self.slot(t.user, first_system + "{{ .Content }}") + "{{ $sys = \"\" }}"
                         "{{ else }}" + user + "{{ end }}")
            head = ""
        else:
            user_turn = user
            head = "{{ if $sys }}" + system + "{{ end }}"
        sep = ("{{ if $later }}" + separator + "{{ end }}{{ $later = true }}") if separator else ""
        default_system = t.default_system or ""
        sys_init = "{{ $sys := .System }}" if not default_system else (
            "{{ $sys := .System }}{{ if not $sys }}{{ $sys = " + json.dumps(default_system) + " }}{{ end }}")
        return (sys_init + "{{ $later := false }}" + prefix + head +
                "{{ range .Messages }}"
                "{{ if eq .Role \"user\" }}" + sep + user_turn +
                "{{ else if eq .Role \"assistant\" }}" + assistant +
                "{{ else if eq .Role \"tool\" }}" + sep + tool +
                "{{ end }}{{ end }}")


def stop_words(template, tokenizer) -> list[str]:
    words = list(getattr(template, "stop_words", ()) or ())
    if tokenizer is not None and tokenizer.eos_token and tokenizer.eos_token not in words:
        words.append(tokenizer.eos_token)
    return words


def ollama_modelfile(template, tokenizer) -> str:
    from tunery.data.templates import Template

    lines = ["# Ollama Modelfile written by `tunery export` — `ollama create NAME -f Modelfile` in this folder", "",
             "FROM .", ""]
    body = _Writer(template, tokenizer).template() if isinstance(template, Template) else None
    if body is not None:
        lines += ['TEMPLATE """' + body + '"""', ""]
    else:
        lines += ["# TEMPLATE omitted: Ollama reads the chat template in tokenizer_config.json / chat_template.jinja",
                  ""]
    system = getattr(template, "default_system", "") or ""
    if system:
        lines += ['SYSTEM """' + system + '"""', ""]
    for word in stop_words(template, tokenizer):
        lines.append("PARAMETER stop " + json.dumps(word, ensure_ascii=False))
    return "\n".join(lines) + "\n"
