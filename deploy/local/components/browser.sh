# Debian's Chromium, headless: the tests open the metrics-shipper's status page
# in a real browser and take a screenshot. Nothing runs in the background; the
# check is that the browser really starts and renders a page.
# shellcheck shell=bash

browser_install() {
    apt_ensure chromium
    # once per installed version: a browser that cannot start headless here is named now,
    # not as a test failure later
    local version stamp tmp
    version=$(dpkg-query -W -f='${Version}' chromium 2>/dev/null) || die "chromium is not installed (apt-get install chromium)"
    stamp=$STACK_CACHE/chromium-selfcheck-$version
    [[ -e $stamp ]] && return 0
    tmp=$(mktemp -d)
    printf '<p id="ok">rendered</p>' > "$tmp/page.html"
    if timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$tmp/profile" --dump-dom "file://$tmp/page.html" 2>"$LOGS/chromium-selfcheck.log" \
        | grep -q 'id="ok"'; then
        touch "$stamp"
    else
        rm -rf "$tmp"
        die "chromium did not render a page headless; see $LOGS/chromium-selfcheck.log"
    fi
    rm -rf "$tmp"
}

browser_start() { :; }
browser_stop() { :; }

browser_status() {
    printf 'headless %s (for the status-page test)' "$(chromium --version 2>/dev/null || echo 'chromium missing')"
    command -v chromium >/dev/null
}
