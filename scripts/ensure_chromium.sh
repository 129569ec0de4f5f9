#!/usr/bin/env bash
# The report test renders the HTML report in headless Chromium. `make test` gets it here so that a
# fresh machine needs nothing installed by hand: Debian/Ubuntu's package when we are root with
# apt-get; otherwise one line saying what to do (the test then fails with the same advice).
set -u
if [ "${FEATSTORE_SKIP_BROWSER:-}" = 1 ] || command -v chromium >/dev/null 2>&1 \
   || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the report's browser test (apt-get) ..." >&2
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
      >/dev/null; then
    exit 0
  fi
fi
echo "warning: headless Chromium not found and not installable here; install it" \
     "(apt-get install -y chromium) or set FEATSTORE_SKIP_BROWSER=1, else the report's browser" \
     "test fails" >&2
exit 0
