"""The Gradio app, one module per tab; `app.py` at the repository root is its entry point.

| module | holds |
|---|---|
| `config` | `AppConfig` and `parse_args` (flags and environment variables) |
| `models` | backbones, feature caches and GRMP-IQA scorers shared by all sessions |
| `session` | one browser session's photos and results; the memory budget and idle expiry |
| `outputs` | typed handler results, one field per output component |
| `photo_panel`, `table`, `score_tab` | the first tab: photos, the prompt table, scoring |
| `lab_tab`, `adapt_tab`, `filter_tab`, `about_tab` | the other tabs |
| `layout`, `security`, `messages`, `gpu` | theme and CSS, response headers, error messages, ZeroGPU |
| `demo` | the tabs put together and wired (`build_demo`), `launch`, `main` |

Importing this package imports gradio, not torch: `spaces` (ZeroGPU) must be imported before torch.
"""
