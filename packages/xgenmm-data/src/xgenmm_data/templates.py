"""Conversation templates: render a LLaVA conversation into text segments, each marked supervised or not.

The `phi_3` template reproduces xGen-MM's SFT string exactly (LAVIS
`open_flamingo/train/sft_data_utils.py::preprocess_phi_3_new`):

    <|system|>\\n{system}<|end|>\\n<|user|>\\n{q}<|end|>\\n<|assistant|>\\n{a}<|end|>\\n ...

A rendered conversation is a list of `Segment(text, supervised)`; concatenating the texts gives the training
string, and the supervised segments are exactly each assistant reply plus its end marker
(`sft_data_utils.preprocess_phi_3_new`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

PHI3_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}


@dataclass(frozen=True)
class Segment:
    """A piece of the rendered conversation; `supervised` pieces get labels, the rest get -100."""

    text: str
    supervised: bool = False


def normalize_messages(conversations: list[dict]) -> list[dict]:
    """LLaVA `{"from", "value"}` (or chat `{"role", "content"}`) turns -> `[{"role", "content"}]`.

    Roles: human -> user, gpt -> assistant, system stays system; any other role raises ValueError.
    """
    messages = []
    for k, turn in enumerate(conversations):
        if not isinstance(turn, dict):
            raise ValueError(f"turn {k} is not an object")
        role = turn.get("from", turn.get("role"))
        content = turn.get("value", turn.get("content"))
        if role not in ROLE_ALIASES:
            raise ValueError(f"turn {k} has unknown role {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"turn {k} has no text value")
        messages.append({"role": ROLE_ALIASES[role], "content": content})
    return messages


@dataclass
class ChatTemplate:
    """A role-token chat format.

    Each message renders as `{role_prefix}{content}{end}`; a user message is followed by the assistant's
    generation prompt. Supervised = assistant content + `end`; `after_end` (e.g. "\\n") is not supervised.
    """

    name: str
    system: str | None
    system_prefix: str
    user_prefix: str
    assistant_prefix: str
    end: str
    after_end: str = "\n"
    stop_strings: list[str] = field(default_factory=list)

    def segments(self, conversations: list[dict], add_system: bool = True) -> list[Segment]:
        """Render a conversation (LLaVA or chat form) as segments. Prepends `self.system` if the first turn
        is not a system turn (as the original does)."""
        messages = normalize_messages(conversations)
        if add_system and self.system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.system}] + messages
        segs: list[Segment] = []
        for m in messages:
            if m["role"] == "system":
                segs.append(Segment(self.system_prefix + m["content"] + self.end + self.after_end))
            elif m["role"] == "user":
                segs.append(Segment(self.user_prefix + m["content"] + self.end + self.after_end))
                segs.append(Segment(self.assistant_prefix))
            else:
                segs.append(Segment(m["content"] + self.end, supervised=True))
                if self.after_end:
                    segs.append(Segment(self.after_end))
        return segs

    def render(self, conversations: list[dict], add_system: bool = True) -> str:
        """The full training string."""
        return "".join(s.text for s in self.segments(conversations, add_system))

    def prompt(self, query: str, system: str | None = None, history: list[dict] | None = None) -> str:
        """Inference prompt: system block, earlier turns, `query` as the last user turn, generation prompt."""
        conv = list(history or [])
        if system is not None:
            conv = [{"from": "system", "value": system}] + conv
        conv.append({"from": "human", "value": query})
        return self.render(conv)


class TokenizerChatTemplate:
    """Use a tokenizer's own `chat_template` (via `apply_chat_template`).

    Segments are found by rendering growing prefixes of the conversation and taking differences, so any Jinja
    template works as long as rendering is prefix-stable (checked: a non-prefix-stable template raises).
    """

    name = "tokenizer"

    def __init__(self, tokenizer, system: str | None = None):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("template 'tokenizer': the tokenizer has no chat_template")
        self.tokenizer = tokenizer
        self.system = system

    def _render(self, messages, generation_prompt=False) -> str:
        if not messages:
            return ""
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )

    def segments(self, conversations: list[dict], add_system: bool = True) -> list[Segment]:
        """The conversation rendered by the tokenizer's `chat_template`, cut into segments (assistant replies
        supervised) by rendering growing prefixes; a template that is not prefix-stable is a ValueError."""
        messages = normalize_messages(conversations)
        if add_system and self.system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.system}] + messages
        segs, done = [], ""
        for k, m in enumerate(messages):
            if m["role"] == "assistant":
                with_prompt = self._render(messages[:k], generation_prompt=True)
                if not with_prompt.startswith(done):
                    raise ValueError("chat_template is not prefix-stable; use a named template")
                segs.append(Segment(with_prompt[len(done) :]))
                done = with_prompt
            full = self._render(messages[: k + 1])
            if not full.startswith(done):
                raise ValueError("chat_template is not prefix-stable; use a named template")
            segs.append(Segment(full[len(done) :], supervised=m["role"] == "assistant"))
            done = full
        return [s for s in segs if s.text]

    def render(self, conversations: list[dict], add_system: bool = True) -> str:
        """The whole conversation as one string (the segments joined)."""
        return "".join(s.text for s in self.segments(conversations, add_system))

    def prompt(self, query: str, system: str | None = None, history: list[dict] | None = None) -> str:
        """Inference prompt: system, `history` turns and `query`, ending with the generation prompt."""
        messages = normalize_messages(list(history or []) + [{"from": "human", "value": query}])
        sys_text = system if system is not None else self.system
        if sys_text is not None:
            messages = [{"role": "system", "content": sys_text}] + messages
        return self._render(messages, generation_prompt=True)


TEMPLATES: dict[str, Callable[[], ChatTemplate]] = {}


def register_template(name: str, factory: Callable[[], ChatTemplate]) -> None:
    """Add a template to the registry (`get_template(name)` then builds it)."""
    TEMPLATES[name] = factory


register_template(
    "phi_3",
    lambda: ChatTemplate(
        name="phi_3",
        system=PHI3_SYSTEM,
        system_prefix="<|system|>\n",
        user_prefix="<|user|>\n",
        assistant_prefix="<|assistant|>\n",
        end="<|end|>",
        after_end="\n",
        stop_strings=["<|end|>"],
    ),
)
# A template with no special tokens at all, for tiny test models / tokenizers without role tokens.
register_template(
    "plain",
    lambda: ChatTemplate(
        name="plain",
        system=None,
        system_prefix="System: ",
        user_prefix="User: ",
        assistant_prefix="Assistant: ",
        end="\n",
        after_end="",
        stop_strings=["\n"],
    ),
)


def get_template(template="phi_3", tokenizer=None):
    """A template object from a name (`phi_3`, `plain`, `tokenizer` = the tokenizer's chat_template) or an
    object that already has `segments`/`prompt`."""
    if not isinstance(template, str):
        return template
    if template == "tokenizer":
        if tokenizer is None:
            raise ValueError("template 'tokenizer' needs a tokenizer")
        return TokenizerChatTemplate(tokenizer)
    if template not in TEMPLATES:
        raise KeyError(f"unknown template {template!r}; known: {sorted(TEMPLATES) + ['tokenizer']}")
    return TEMPLATES[template]()


def build_prompt(
    query: str, template="phi_3", system: str | None = None, history=None, tokenizer=None
) -> str:
    """Inference prompt ending with the generation prompt (`<|assistant|>\\n` for phi_3), as the original's
    `conv_phi_3`.

    `query` may contain `<image>` placeholders (one per image, in image order).
    """
    return get_template(template, tokenizer).prompt(query, system=system, history=history)


__all__ = [
    "PHI3_SYSTEM",
    "Segment",
    "ChatTemplate",
    "TokenizerChatTemplate",
    "TEMPLATES",
    "register_template",
    "get_template",
    "build_prompt",
    "normalize_messages",
]
