"""HTTP serving: the BentoML service (``service.py``), its lean Starlette app and the listener's web page.

Importing this package imports neither BentoML nor the model: ``recsys.serving.service`` does.
"""
