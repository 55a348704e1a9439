#!/usr/bin/env python3
"""Drives two meshrelay web apps in a real headless Chromium, as two people
would (tests/it/web.rs runs it; protocol-spec/web.md).

A's person creates a room with a hostile name, invites B by B's contact card
and sends a message; B's page shows the room and the message live. Each
screen is captured at phone (360 px) and desktop (1280 px) width.

The browser is driven over the DevTools protocol on a pipe
(--remote-debugging-pipe: NUL-separated JSON on file descriptors 3 and 4), so
only the Python standard library is needed.

Usage: browser_flow.py CHROMIUM URL_A URL_B SHOT_DIR
Prints one JSON object; exit 0 when every check passed.
"""
import base64
import json
import os
import subprocess
import sys
import time

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)> camp"
TEXT = "Water at the north gate <b>now</b>. Bring 20 L."


class Browser:
    def __init__(self, chromium):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def fds():
            # Out of the way first: the pipes may sit on 3 or 4 already.
            r, w = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, close_fds=False)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buf = b""
        self.next_id = 0

    def call(self, method, params=None, session=None, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while time.time() < deadline:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser exited")
            self.buf += chunk
        raise RuntimeError(f"{method}: no answer in {timeout} s")

    def page(self, url, width):
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        p = Page(self, session)
        p.size(width)
        self.call("Page.enable", session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        return p

    def close(self):
        self.proc.kill()
        self.proc.wait()


class Page:
    def __init__(self, browser, session):
        self.b = browser
        self.s = session

    def size(self, width):
        mobile = width < 600
        self.b.call("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": 780 if mobile else 820, "deviceScaleFactor": 1, "mobile": mobile,
        }, session=self.s)

    def js(self, expr):
        r = self.b.call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True}, session=self.s)
        if "exceptionDetails" in r:
            raise RuntimeError(f"script failed: {expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr, what, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.js(expr):
                    return
            except RuntimeError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"timed out waiting for {what}")

    def go(self, hash_):
        self.js(f"location.hash = {json.dumps(hash_)}")

    def shots(self, shots, name):
        """The screen at phone width, then at desktop width; back to phone."""
        self.shot(f"{shots}/{name}-phone.png")
        self.size(1280)
        self.shot(f"{shots}/{name}-desktop.png")
        self.size(360)

    def shot(self, path):
        # A background tab may render no frame to capture.
        self.b.call("Page.bringToFront", session=self.s)
        time.sleep(0.3)
        data = self.b.call("Page.captureScreenshot", {"format": "png"}, session=self.s)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))


def main():
    chromium, url_a, url_b, shots = sys.argv[1:5]
    os.makedirs(shots, exist_ok=True)
    result = {"checks": []}
    b = Browser(chromium)
    try:
        a = b.page(url_a + "/#/rooms", 360)
        a.wait("document.getElementById('view-rooms') && !document.getElementById('view-rooms').hidden", "A's rooms screen")
        a.shots(shots, "rooms-empty")
        # B's person shows their card (the Me screen); A's pastes it.
        bp = b.page(url_b + "/#/me", 360)
        bp.wait("document.getElementById('me-card').value.startsWith('MRC1:')", "B's card")
        bp.wait("document.getElementById('me-qr').complete && document.getElementById('me-qr').naturalWidth > 0", "B's QR code")
        bp.shots(shots, "me")
        card = bp.js("document.getElementById('me-card').value")
        # A creates the room by its form.
        a.js(f"document.getElementById('room-name').value = {json.dumps(HOSTILE)};"
             "document.getElementById('room-create').requestSubmit()")
        a.wait("location.hash.startsWith('#/room/')", "the new room to open")
        room = a.js("decodeURIComponent(location.hash.slice(7))")
        title = a.js("document.getElementById('room-title').textContent")
        assert title == HOSTILE, f"title shown as {title!r}"
        assert a.js("document.querySelectorAll('main img:not(#me-qr), main script').length") == 0, "markup from a room name ran"
        result["checks"].append("hostile room name shown as text")
        fp = bp.js("document.getElementById('me-fingerprint').textContent")
        a.js("document.querySelector('details.invite').open = true;"
             f"const c = document.getElementById('card'); c.value = {json.dumps(card)};"
             "c.dispatchEvent(new Event('input'))")
        a.wait(f"document.getElementById('card-who').textContent.includes({json.dumps(fp)})", "the card's fingerprint before inviting")
        result["checks"].append("the pasted card's fingerprint is shown before inviting")
        a.shots(shots, "invite")
        a.js("document.getElementById('invite').requestSubmit()")
        a.wait("document.getElementById('room-members').textContent.includes(',')", "B among the members")
        a.js(f"document.getElementById('text').value = {json.dumps(TEXT)};"
             "document.getElementById('composer').requestSubmit()")
        a.wait(f"document.getElementById('lines').textContent.includes({json.dumps(TEXT)})", "A's own message shown")
        assert a.js("document.querySelectorAll('#lines b').length") == 0, "message markup was rendered"
        result["checks"].append("A sent by the composer and sees its message")
        a.shot(f"{shots}/room-phone.png")
        a.size(1280)
        a.shot(f"{shots}/room-desktop.png")
        # B's page: the room arrives over the mesh, then the message, live.
        bp.go("#/rooms")
        bp.wait(f"document.getElementById('room-list').textContent.includes('</script><img src=x onerror=alert(2)> camp')", "the room on B", timeout=90)
        bp.wait("document.getElementById('room-list').textContent.includes('1 new')", "the unread count on B")
        result["checks"].append("B's rooms list counts the unread message")
        bp.shots(shots, "rooms")
        bp.go("#/room/" + room)
        bp.wait(f"document.getElementById('lines').textContent.includes({json.dumps(TEXT)})", "the message on B", timeout=90)
        t0 = time.time()
        live = "Second message, sent while B watches"
        a.js(f"document.getElementById('text').value = {json.dumps(live)};"
             "document.getElementById('composer').requestSubmit()")
        bp.wait(f"document.getElementById('lines').textContent.includes({json.dumps(live)})", "the live message on B", timeout=60)
        result["live_seconds"] = round(time.time() - t0, 2)
        # B's person saw it: A's page marks it read (B's read receipt,
        # coalesced for a few seconds, over the mesh).
        a.wait("[...document.querySelectorAll('#lines li')].some(li => li.textContent.includes("
               f"{json.dumps(live)}) && li.querySelector('.ticks') && li.querySelector('.ticks').textContent.includes('read by'))",
               "B's read receipt on A's page", timeout=60)
        result["receipt_seconds"] = round(time.time() - t0, 2)
        result["checks"].append("A's page shows that B read the message")
        a.shot(f"{shots}/receipt-desktop.png")
        a.size(360)
        a.shot(f"{shots}/receipt-phone.png")
        bp.go("#/rooms")
        bp.wait("document.getElementById('room-list').textContent.includes('member')", "B's rooms again")
        time.sleep(1)
        assert " new" not in bp.js("document.getElementById('room-list').textContent"), "read messages still counted as new"
        bp.go("#/room/" + room)
        bp.wait(f"document.getElementById('lines').textContent.includes({json.dumps(live)})", "the room again on B")
        result["checks"].append("B's open room showed A's new message without a reload")
        bp.shots(shots, "room-b")
        # A calls for help with a pin, marked urgent; B's open room shows it
        # marked, with the map link.
        a.js("document.getElementById('text').value = 'Need water at the school';"
             "document.getElementById('pin').value = '52.52, 13.405';"
             "document.getElementById('urgent').checked = true;"
             "document.getElementById('composer').requestSubmit()")
        bp.wait("[...document.querySelectorAll('#lines li.urgent')].some(li => li.textContent.includes('Need water at the school')"
                " && li.textContent.includes('URGENT') && li.querySelector('a[href*=openstreetmap]'))",
                "the urgent pin on B", timeout=60)
        assert not a.js("document.getElementById('urgent').checked"), "the urgent box stays ticked"
        result["checks"].append("an urgent location pin from A's composer is marked on B's page")
        bp.shots(shots, "urgent")
        # A sends a photo (a 2000 x 1500 picture, drawn in the page) from the
        # composer: it is downscaled to 1024 px before it leaves, and B's
        # page shows it once every chunk has arrived.
        a.js("(async () => {"
             " const c = document.createElement('canvas'); c.width = 2000; c.height = 1500;"
             " const g = c.getContext('2d');"
             " for (let i = 0; i < 60; i++) { g.fillStyle = `hsl(${i * 6}, 70%, 50%)`; g.fillRect((i * 97) % 1900, (i * 53) % 1400, 300, 200); }"
             " const blob = await new Promise((ok) => c.toBlob(ok, 'image/png'));"
             " const dt = new DataTransfer(); dt.items.add(new File([blob], 'school.png', { type: 'image/png' }));"
             " document.getElementById('file').files = dt.files;"
             " document.getElementById('text').value = 'The school roof';"
             " document.getElementById('composer').requestSubmit(); return blob.size; })()")
        bp.wait("[...document.querySelectorAll('#lines li')].some(li => li.textContent.includes('The school roof')"
                " && li.querySelector('.file img') && li.querySelector('.file img').naturalWidth > 0)",
                "the photo on B", timeout=90)
        width = bp.js("[...document.querySelectorAll('#lines .file img')].pop().naturalWidth")
        size = bp.js("fetch([...document.querySelectorAll('#lines .file img')].pop().src).then(r => r.blob()).then(b => b.size)")
        assert width == 1024, f"the photo is {width} px wide"
        assert 0 < size <= 150_000, f"the photo is {size} bytes"
        result["photo_bytes"] = size
        assert "unknown reason" not in bp.js("document.getElementById('lines').textContent"), "a readable line is called unreadable"
        result["checks"].append("a photo from A's composer is downscaled to 1024 px and shown on B's page")
        bp.shots(shots, "photo")
        # A (an admin) makes B an admin from the members list.
        a.size(360)
        a.js("document.querySelector('details.members').open = true;"
             "[...document.querySelectorAll('#member-list button')].find(b => b.textContent === 'Make admin').click()")
        a.wait("document.getElementById('room-members').textContent.includes('Ben (admin)')", "B shown as an admin")
        a.js("document.querySelector('details.members').open = true")
        result["checks"].append("an admin promoted a member from the app")
        a.shots(shots, "members")
        bp.go("#/peers")
        bp.wait("document.getElementById('peer-rows').children.length > 0", "B's links")
        bp.shot(f"{shots}/node-phone.png")
        bp.size(1280)
        bp.shot(f"{shots}/node-desktop.png")
        result["ok"] = True
    except (AssertionError, RuntimeError) as e:
        result["ok"] = False
        result["error"] = str(e)
    finally:
        b.close()
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
