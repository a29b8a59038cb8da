"""``pvchat serve``: a local web app over :mod:`pvchat.api` (Gradio).

Modules, smallest first; only :mod:`pvchat.web.app` and :mod:`pvchat.web.serve` import Gradio:

- :mod:`~pvchat.web.uploads`: size, duration and type checks of an uploaded video (PyAV decode).
- :mod:`~pvchat.web.jobs`: the enrolment queue, one background worker running ``api.learn``.
- :mod:`~pvchat.web.views`: plain functions turning cards, jobs, answers and head activations
  into what the page shows (markdown, tables, data frames, images).
- :mod:`~pvchat.web.service`: the state one server shares across tabs (home, queue, chat cache)
  and the actions the page calls, testable without a browser.
- :mod:`~pvchat.web.app`: the Gradio page, one builder function per tab.
- :mod:`~pvchat.web.serve`: the server: token, Gradio's files, build and run (the command is
  :mod:`pvchat.commands.serve`).
"""
