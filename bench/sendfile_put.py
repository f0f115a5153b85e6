"""One PUT of a file to a presigned URL (plain http), its body sent with os.sendfile: the
kernel hands page-cache pages to the socket, nothing is copied in user space. A measuring aid
for bench/RESULTS.md (what a zero-copy send costs), not one of run.sh's tools:

    python3 bench/sendfile_put.py FILE "$(curl -sf -X POST "$API/_emulator/presign-put?key=K" | jq -r .url)"
"""
import os, socket, sys, urllib.parse
path, url = sys.argv[1], sys.argv[2]
u = urllib.parse.urlsplit(url)
size = os.stat(path).st_size
s = socket.create_connection((u.hostname, u.port))
target = u.path + ("?" + u.query if u.query else "")
s.sendall(f"PUT {target} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n".encode())
fd = os.open(path, os.O_RDONLY)
off = 0
while off < size:
    n = os.sendfile(s.fileno(), fd, off, size - off)
    if n == 0:
        sys.exit("file shrank")
    off += n
resp = s.recv(65536).split(b"\r\n", 1)[0]
if b" 200 " not in resp:
    sys.exit(resp.decode())
