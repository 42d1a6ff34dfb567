#!/usr/bin/env python3
"""Signs a manifest digest the way cosign stores it, without kiln: the
simple-signing payload, an ECDSA P-256 signature from `openssl dgst -sha256
-sign`, pushed (stdlib urllib, plain HTTP on loopback) as the
`sha256-HEX.sig` manifest. Usage:
  cosign_sign.py REGISTRY REPO DIGEST IDENTITY KEY.pem   (KEY: an unencrypted PEM private key)
Prints the signature tag."""
import base64, hashlib, json, subprocess, sys, tempfile, urllib.request

reg, repo, digest, identity, key = sys.argv[1:6]
base = f"http://{reg}"
payload = json.dumps({"critical": {"identity": {"docker-reference": identity},
                                   "image": {"docker-manifest-digest": digest},
                                   "type": "cosign container image signature"},
                      "optional": None}, separators=(",", ":")).encode()
with tempfile.NamedTemporaryFile() as f:
    f.write(payload); f.flush()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key, f.name], capture_output=True, check=True).stdout

def put_blob(b):
    d = "sha256:" + hashlib.sha256(b).hexdigest()
    r = urllib.request.urlopen(urllib.request.Request(f"{base}/v2/{repo}/blobs/uploads/", method="POST", data=b""))
    loc = r.headers["Location"]; loc = loc if loc.startswith("http") else base + loc
    sep = "&" if "?" in loc else "?"
    urllib.request.urlopen(urllib.request.Request(f"{loc}{sep}digest={d}", method="PUT", data=b,
                                                  headers={"Content-Type": "application/octet-stream"}))
    return d

pd = put_blob(payload)
cfg = json.dumps({"architecture": "", "created": "0001-01-01T00:00:00Z", "history": [{"created": "0001-01-01T00:00:00Z"}],
                  "os": "", "rootfs": {"type": "layers", "diff_ids": [pd]}, "config": {}}, separators=(",", ":")).encode()
cd = put_blob(cfg)
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(cfg), "digest": cd},
                  "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "size": len(payload), "digest": pd,
                              "annotations": {"dev.cosignproject.cosign/signature": base64.b64encode(sig).decode()}}]},
                 separators=(",", ":")).encode()
tag = digest.replace(":", "-", 1) + ".sig"
urllib.request.urlopen(urllib.request.Request(f"{base}/v2/{repo}/manifests/{tag}", method="PUT", data=man,
                                              headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}))
print(tag)
