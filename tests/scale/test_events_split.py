"""Live events across processes: an `--role api` process streams GET /events of a job that a `--role worker`
process runs (PostgreSQL LISTEN/NOTIFY between them, SPEC "Live events": "It works when the job ran in another
process").

One API and one worker on a fresh database: a photo of many tiles uploaded through the API is seen on the API's
stream (queued, if the worker has not claimed it by then), processing with several rising progress values, then
completed, all of it written by the worker; another user's stream on the same API sees none of it; the API ran
no job.
"""

import json
import threading
import time

import scale_harness as h
from scale_harness import Api

PASSWORD = "split-password-1"
# 960x720 in tiles of 256 px: 4 x 3 = 12 tiles, so the worker writes progress many times (at most every 250 ms).
SIZE = (960, 720)
WORKER_ENV = {"JOB_WORKERS": 1, "JOB_POLL_MS": 500, "TILE": 256}
API_ENV = {"EVENTS_KEEPALIVE_SECONDS": 1}


class Stream:
    """GET /events on one process, read in a thread: messages as dicts (event, id, data) with arrival times."""

    def __init__(self, proc, token):
        self.http = h.session()
        self.response = self.http.get(proc.url + "/events", headers={"Authorization": f"Bearer {token}"},
                                      stream=True, timeout=(10, 60))
        assert self.response.status_code == 200, (self.response.status_code, self.response.text[:300])
        assert self.response.headers["Content-Type"].startswith("text/event-stream"), self.response.headers
        self.messages, self.comments = [], 0
        self.error = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        buf, msg = b"", {}
        try:
            for chunk in self.response.iter_content(chunk_size=None):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    line = line.decode()
                    if line == "":
                        if "data" in msg:
                            msg["t"] = time.monotonic()
                            self.messages.append(msg)
                        msg = {}
                    elif line.startswith(":"):
                        self.comments += 1
                    else:
                        field, _, value = line.partition(":")
                        msg[field] = value[1:] if value.startswith(" ") else value
        except Exception as e:  # noqa: BLE001 - seen by the test
            self.error = e

    def photos(self, photo_id):
        return [json.loads(m["data"]) for m in list(self.messages)
                if m.get("event") == "photo" and json.loads(m["data"])["id"] == photo_id]

    def close(self):
        self.response.close()
        self.http.close()


def login(api_proc, name):
    r = Api(api_proc).register(name, PASSWORD)
    assert r.status_code == 200, (r.status_code, r.text)
    r = Api(api_proc).login(name, PASSWORD)
    assert r.status_code == 200, (r.status_code, r.text)
    return Api(api_proc, r.json()["access_token"])


def test_events_from_a_worker_process_reach_the_api_stream(cluster):
    api = cluster.api("api-1", role_via="flag", **API_ENV).start()
    api.wait_http()
    worker = cluster.worker("w1", role_via="flag", **WORKER_ENV).start()
    cluster.wait_workers_registered(["w1"])

    owner, other = login(api, f"split_owner_{time.time_ns()}"), login(api, f"split_other_{time.time_ns()}")
    mine, theirs = Stream(api, owner.token), Stream(api, other.token)
    r = owner.upload(h.whole_jpeg(*SIZE, "chelsea"))
    assert r.status_code == 200, (r.status_code, r.text)
    photo_id = r.json()["id"]

    deadline = time.monotonic() + 120
    while not any(e["status"] in ("completed", "failed") for e in mine.photos(photo_id)):
        assert mine.error is None, f"the stream broke: {mine.error!r}"
        assert time.monotonic() < deadline, f"no completed event within 120 s: {mine.photos(photo_id)[-3:]}"
        time.sleep(0.1)
    time.sleep(1.5)  # keep-alives on both streams

    events = mine.photos(photo_id)
    statuses = []
    for e in events:
        if not statuses or statuses[-1] != e["status"]:
            statuses.append(e["status"])
    # An event carries the photo as it is when the API hears of the change: with the worker idle, the upload's
    # own event may already read `processing` (the worker claimed the job before the NOTIFY was handled).
    assert statuses in (["queued", "processing", "completed"], ["processing", "completed"]), statuses
    progress = [e["progress"] for e in events]
    assert all(b >= a for a, b in zip(progress, progress[1:])), f"progress fell: {progress}"
    between = sorted({p for p in progress if 0.0 < p < 1.0})
    assert len(between) >= 2, f"progress seen on the API's stream: {progress}"
    assert events[-1]["progress"] == 1.0 and events[-1]["upscaled_path"] == f"storage/upscaled/{photo_id}.jpg"
    assert events[-1]["upscaled_width"] == 4 * SIZE[0], events[-1]
    r = owner.http.get(api.url + f"/photos/{photo_id}/info", headers=owner._headers(), timeout=30)
    assert r.status_code == 200 and r.json() == events[-1], (r.status_code, r.text, events[-1])

    ids = [int(m["id"]) for m in mine.messages]
    assert ids[0] == 1 and all(b > a for a, b in zip(ids, ids[1:])), ids
    assert theirs.messages == [], theirs.messages[:3]
    assert mine.comments >= 2 and theirs.comments >= 2, (mine.comments, theirs.comments)
    assert mine.error is None and theirs.error is None, (mine.error, theirs.error)

    # The job ran in the worker, not in the API process.
    job_lines = h.job_events(worker.log_text(), worker.name)
    assert [e["kind"] for e in job_lines if e["photo"] == photo_id] == ["started", "completed"], \
        [e["line"] for e in job_lines]
    assert not h.job_events(api.log_text(), api.name), "the API process ran a job"
    print(f"\nAPI stream: {len(events)} events of the worker's job, progress {between}")

    mine.close()
    theirs.close()
    codes = cluster.stop_all()
    assert codes == {"api-1": 0, "w1": 0}, codes
