"""`tunery webchat`: chat in the browser (Gradio) with the same options as `tunery chat`.

Streaming replies, a system prompt, generation sliders and a clear button; with `--compare`, the fine-tuned and the
base model answer side by side. Binds 127.0.0.1 unless GRADIO_SERVER_NAME says otherwise; GRADIO_SERVER_PORT
(default: the first free port from 7860) and GRADIO_SHARE (a public gradio.live link) are honoured.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

from tunery.errors import TuneryError

if TYPE_CHECKING:
    from tunery.config.loader import Config

_TRUE = ("1", "true", "yes", "on")
FOOTER = ["gradio", "settings"]  # no "api" link: the board's handlers are not a public API


def _plain(history) -> list[dict]:
    """Gradio's message dicts (with metadata/options) → the engine's {role, content} turns."""
    turns = []
    for message in history or []:
        role = message["role"] if isinstance(message, dict) else getattr(message, "role", None)
        content = message["content"] if isinstance(message, dict) else getattr(message, "content", "")
        if isinstance(content, list):  # Gradio 6: a list of parts, [{"type": "text", "text": ...}, ...]
            texts = [part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text"]
            content = "".join(t for t in texts if isinstance(t, str)) if texts else None
        if role in ("user", "assistant") and isinstance(content, str):
            turns.append({"role": role, "content": content})
    return turns


def stream_replies(engines: list, labels: list[str], system_text, max_new_tokens, temp, top, histories):
    """Answer the last user turn of each history with its engine, streaming: yields (*histories, speed text)."""
    import gradio as gr

    histories = [list(h or []) for h in histories]
    speeds: list[str] = []
    for k, engine in enumerate(engines):
        history = histories[k]
        if not history or history[-1]["role"] != "user":
            continue
        try:
            stream = engine.stream_chat(_plain(history), system=system_text or None,
                                        max_new_tokens=int(max_new_tokens), temperature=float(temp),
                                        top_p=float(top))
        except TuneryError as err:
            raise gr.Error(str(err)) from None
        history.append({"role": "assistant", "content": ""})
        for piece in stream:
            history[-1] = {"role": "assistant", "content": history[-1]["content"] + piece}
            yield (*histories, " · ".join(speeds))
        speeds.append(f"{labels[k]}: {stream.completion_tokens} tokens, {stream.tokens_per_second:.1f} tokens/s")
        yield (*histories, " · ".join(speeds))


def build_demo(engines: list, labels: list[str], cfg: Config, title: Optional[str] = None):
    """The Gradio Blocks app: one chat column per engine (two in compare mode)."""
    import gradio as gr

    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    context = min(getattr(e, "context_length", 4096) for e in engines)
    sampled = bool(cfg.do_sample)
    with gr.Blocks(title="Tunery chat", analytics_enabled=False) as demo:
        gr.Markdown(f"### Tunery chat — {title or cfg.model_name_or_path}")
        with gr.Row():
            bots = [gr.Chatbot(label=label, height=420, elem_id=f"chatbot-{k}", allow_tags=False)
                    for k, label in enumerate(labels)]
        system = gr.Textbox(label="System prompt", value=cfg.default_system or "", lines=2, elem_id="system")
        with gr.Row():
            query = gr.Textbox(show_label=False, placeholder="Type a message and press Enter", scale=8,
                               elem_id="query")
            send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
        with gr.Accordion("Generation", open=False):
            max_new = gr.Slider(1, max(2, min(context - 1, 8192)), value=min(cfg.max_new_tokens or 512, context - 1),
                                step=1, label="Max new tokens")
            temperature = gr.Slider(0.0, 1.5, value=cfg.temperature if sampled else 0.0, step=0.01,
                                    label="Temperature (0 = greedy)")
            top_p = gr.Slider(0.01, 1.0, value=cfg.top_p, step=0.01, label="Top-p")
        speed = gr.Markdown(elem_id="speed")
        clear = gr.Button("Clear", elem_id="clear")

        def add_user(message, *histories):
            message = (message or "").strip()
            if not message:
                return ("", *histories)
            return ("", *[list(h or []) + [{"role": "user", "content": message}] for h in histories])

        def respond(system_text, max_new_tokens, temp, top, *histories):
            yield from stream_replies(engines, labels, system_text, max_new_tokens, temp, top, histories)

        inputs = [query, *bots]
        for trigger in (query.submit, send.click):
            trigger(add_user, inputs, inputs, queue=False).then(
                respond, [system, max_new, temperature, top_p, *bots], [*bots, speed])
        clear.click(lambda: tuple([[] for _ in bots] + [""]), None, [*bots, speed], queue=False)
    demo.launch_kwargs = {"theme": theme, "footer_links": FOOTER}  # Gradio 6 takes these at launch
    return demo


def launch_options() -> dict:
    host = os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    raw = os.environ.get("GRADIO_SERVER_PORT")
    port = None
    if raw:
        try:
            port = int(raw)
        except ValueError:
            raise TuneryError(f"GRADIO_SERVER_PORT = {raw!r} is not a port number — set it to e.g. 7860") from None
    share = os.environ.get("GRADIO_SHARE", "").strip().lower() in _TRUE
    return {"server_name": host, "server_port": port, "share": share}


def auth_pairs(value: str | None) -> list[tuple[str, str]] | None:
    """webui_auth 'user:pass,user2:pass2' → Gradio's [(user, pass), ...] (None: no login)."""
    if not value:
        return None
    pairs = [tuple(part.split(":", 1)) for part in str(value).split(",") if part.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1] for p in pairs):
        raise TuneryError("option 'webui_auth' expects USER:PASSWORD (several comma-separated), e.g. "
                          "webui_auth: alice:s3cret — the value is not shown here")
    return [(user.strip(), password) for user, password in pairs]


def exposure_warning(options: dict, auth) -> str | None:
    """The one-line warning for a page (board, web chat) reachable beyond this machine without a login (None: not)."""
    import ipaddress

    host = options.get("server_name") or "127.0.0.1"
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if auth or (local and not options.get("share")):
        return None
    where = "a public gradio.live link (GRADIO_SHARE)" if options.get("share") else f"{host} (GRADIO_SERVER_NAME)"
    return (f"warning: the page is reachable beyond this machine through {where} and has no login — whoever "
            "reaches it can use the models (on the board also train, export and read the saves folder); set "
            "webui_auth USER:PASSWORD")


def login_settings(initial: dict, options: dict) -> tuple[dict, str | None]:
    """(Gradio launch arguments for the login webui_auth asks for, the exposure warning or None)."""
    auth = auth_pairs(initial.get("webui_auth"))
    login = {"auth": auth, "auth_message": "Tunery: log in (webui_auth)"} if auth else {}
    return login, exposure_warning(options, auth)


def create_demo(cfg: Config):
    """Load the engine(s) `cfg` asks for (two with compare) and build the app."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise TuneryError("tunery webchat needs gradio — pip install 'tunery[webui]'") from None
    from tunery.chat.engine import create_compare_engines, create_engine

    if cfg.compare:
        engines, labels = list(create_compare_engines(cfg)), ["fine-tuned", "base"]
    else:
        engines, labels = [create_engine(cfg)], ["chat"]
    if not engines[0].can_generate:
        raise TuneryError("webchat needs a model that generates text; this is a reward model (stage: rm) — drop "
                          "stage: rm")
    return build_demo(engines, labels, cfg)


def run_webchat(cfg: Config) -> int:
    options = launch_options()
    login, warning = login_settings({"webui_auth": cfg.webui_auth}, options)
    demo = create_demo(cfg)
    if warning:
        print(warning, flush=True)
    try:
        demo.queue().launch(inbrowser=False, **demo.launch_kwargs, **login, **options)
    except OSError as err:
        raise TuneryError(f"cannot start the web chat on {options['server_name']}:{options['server_port'] or 7860} "
                          f"({err}) — set GRADIO_SERVER_PORT to a free port") from None
    return 0
