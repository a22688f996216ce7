"""Helpers the pytest harnesses share (service, scale): the setting names, which ports a process listens on, and the real photos tests cut their images from."""

import os
import re

from PIL import Image

ENV_EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".env.example")


def setting_names():
    """Every petcam setting, read from .env.example (the one list of them), so a harness can keep the
    caller's environment out of the servers it starts."""
    with open(ENV_EXAMPLE) as f:
        names = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", f.read(), re.M))
    return names | {"PETCAM_MODELS_DIR"}


def tcp_sockets():
    """(local port, state, inode) of every TCP socket of this host (Linux /proc/net/tcp and tcp6; state "0A" is
    LISTEN)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                rows = [line.split() for line in f]
        except OSError:
            continue
        for cols in rows:
            yield int(cols[1].rsplit(":", 1)[1], 16), cols[3], cols[9]


def socket_inodes(pid):
    """The inodes of the sockets process `pid` holds open."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def listening_ports(pid):
    """The TCP ports on which process `pid` holds a listening socket."""
    mine = socket_inodes(pid)
    return {port for port, state, inode in tcp_sockets() if state == "0A" and inode in mine}


PHOTOS = {
    "chelsea": "/usr/lib/python3/dist-packages/skimage/data/chelsea.png",
    "coffee": "/usr/lib/python3/dist-packages/skimage/data/coffee.png",
    "astronaut": "/usr/lib/python3/dist-packages/skimage/data/astronaut.png",
    "grace_hopper": "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg",
}
_photo_cache = {}


def photo(name="chelsea"):
    """A real photo as RGB: skimage's cat and coffee, matplotlib's Grace Hopper."""
    if name not in _photo_cache:
        path = PHOTOS[name]
        if os.path.exists(path):
            with Image.open(path) as im:
                _photo_cache[name] = im.convert("RGB")
        else:  # skimage keeps its data elsewhere in some versions
            from skimage import data
            _photo_cache[name] = Image.fromarray(getattr(data, name)()).convert("RGB")
    return _photo_cache[name]


def thumbnail_path(photo_id):
    return f"storage/previews/{photo_id}.thumbnail.jpg"


def preview_path(photo_id):
    return f"storage/previews/{photo_id}.preview.jpg"


def photo_files(photo):
    """The storage-relative files a photo (a list item) owns: its original and thumbnail from the upload on,
    and its result and preview once completed."""
    files = {photo["original_path"], thumbnail_path(photo["id"])}
    if photo["upscaled_path"] is not None:
        files |= {photo["upscaled_path"], preview_path(photo["id"])}
    return files
