# The Basic Auth verifier (verifier.py): a Python base image, a pinned bcrypt, one file.
# BASE_IMAGE (RUMISTACK_TOOLS_BASE_IMAGE in .env) is a Debian-based Python image.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN python3 -m venv /opt/verifier \
 && /opt/verifier/bin/pip install --no-cache-dir --disable-pip-version-check bcrypt==5.0.0
COPY verifier.py /opt/verifier/verifier.py
