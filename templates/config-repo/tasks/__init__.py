"""Celery worker code for this fleet, deployed to every host by celeroot.

`tasks.app` is the Celery application (configured from the environment the deploy
writes); `tasks.system` holds system-administration tasks. Add your own modules and list
them in CELEROOT_IMPORTS, or import them from `tasks/app.py`.
"""
