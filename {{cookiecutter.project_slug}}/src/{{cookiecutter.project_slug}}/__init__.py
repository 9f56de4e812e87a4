"""The {{ cookiecutter.project_slug }} service: Server-Sent Events on FastAPI."""
