"""The Gradio app, one module per tab; `app.py` at the repository root is its entry point.

| module | holds |
|---|---|
| `config` | `AppConfig` and `parse_args` (flags and environment variables) |
| `models` | backbones, feature caches and GRMP-IQA scorers shared by all sessions |
| `session` | one browser session's photos and results; the memory budget and idle expiry |
| `outputs` | typed handler results, one field per output component |
| `photo_panel`, `table`, `checkpoints`, `score_tab` | the first tab: photos, the prompt table, checkpoints, scoring |
| `lab_tab`, `adapt_tab`, `filter_tab`, `about_tab` | the other tabs |
| `base`, `events`, `method_settings` | what handlers hold, events from handlers, what each method is given |
| `layout`, `security`, `messages` | theme and CSS, response headers, error messages |
| `gpu`, `jobs`, `calls`, `zerogpu` | the GPU boundary |
| `demo` | the handlers composed (`Handlers`), the page built and wired (`build_demo`), the API, `main` |

Each tab module holds its components (`build_*`), its handler class and its events (`wire_*`).

Importing this package imports gradio, not torch: `spaces` (ZeroGPU) must be imported before torch.
"""
