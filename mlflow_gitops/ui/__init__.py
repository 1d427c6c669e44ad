"""The MLflow UI in a real browser: Debian's Chromium driven by Playwright (browser.py), a local
stand-in for the Gateway's TLS (tls.py), a walk through the UI's pages (tour.py), and `make
screenshot` (__main__.py). tests/e2e/test_ui.py and `make screenshot` share this code."""
