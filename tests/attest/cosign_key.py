#!/usr/bin/env python3
"""Reference (pure-python) implementation of the cosign/go-securesystemslib
'encrypted' private-key format: scrypt KDF + NaCl secretbox (XSalsa20-Poly1305).
An implementation independent of kiln's Rust one (tests use it to check kiln's key files
and to make keys kiln did not make). Usage:
  cosign_key.py decrypt KEYFILE PASSWORD        -> prints PKCS#8 DER as hex, and key info
  cosign_key.py decrypt-pem KEYFILE PASSWORD  -> prints the key as PEM PRIVATE KEY (for openssl)
  cosign_key.py encrypt PKCS8_PEM PASSWORD [N] -> prints ENCRYPTED COSIGN PRIVATE KEY PEM
"""
import sys, json, base64, hashlib, os, struct, textwrap

def _rotl(v, c): return ((v << c) & 0xffffffff) | (v >> (32 - c))
def _salsa_rounds(x):
    x = list(x)
    for _ in range(10):
        for a,b,c,d in ((0,4,8,12),(5,9,13,1),(10,14,2,6),(15,3,7,11)):
            x[b]^=_rotl((x[a]+x[d])&0xffffffff,7); x[c]^=_rotl((x[b]+x[a])&0xffffffff,9)
            x[d]^=_rotl((x[c]+x[b])&0xffffffff,13); x[a]^=_rotl((x[d]+x[c])&0xffffffff,18)
        for a,b,c,d in ((0,1,2,3),(5,6,7,4),(10,11,8,9),(15,12,13,14)):
            x[b]^=_rotl((x[a]+x[d])&0xffffffff,7); x[c]^=_rotl((x[b]+x[a])&0xffffffff,9)
            x[d]^=_rotl((x[c]+x[b])&0xffffffff,13); x[a]^=_rotl((x[d]+x[c])&0xffffffff,18)
    return x
C = struct.unpack('<4I', b'expand 32-byte k')
def _state(key, inp16):
    k = struct.unpack('<8I', key); i = struct.unpack('<4I', inp16)
    return [C[0],k[0],k[1],k[2],k[3],C[1],i[0],i[1],i[2],i[3],C[2],k[4],k[5],k[6],k[7],C[3]]
def hsalsa20(key, n16):
    x = _salsa_rounds(_state(key, n16))
    return struct.pack('<8I', x[0],x[5],x[10],x[15],x[6],x[7],x[8],x[9])
def salsa20_stream(key, n8, length):
    out = bytearray(); ctr = 0
    while len(out) < length:
        s = _state(key, n8 + struct.pack('<Q', ctr)); x = _salsa_rounds(s)
        out += struct.pack('<16I', *[(a+b)&0xffffffff for a,b in zip(x,s)]); ctr += 1
    return bytes(out[:length])
def poly1305(key, msg):
    r = int.from_bytes(key[:16],'little') & 0x0ffffffc0ffffffc0ffffffc0fffffff
    s = int.from_bytes(key[16:],'little'); p = (1<<130)-5; acc = 0
    for i in range(0, len(msg), 16):
        acc = ((acc + int.from_bytes(msg[i:i+16] + b'\x01','little')) * r) % p
    return ((acc + s) & ((1<<128)-1)).to_bytes(16,'little')
def secretbox_open(box, nonce, key):
    sub = hsalsa20(key, nonce[:16]); ct = box[16:]
    st = salsa20_stream(sub, nonce[16:], 32 + len(ct))
    if poly1305(st[:32], ct) != box[:16]: raise ValueError('secretbox: authentication failed')
    return bytes(a^b for a,b in zip(ct, st[32:]))
def secretbox_seal(msg, nonce, key):
    sub = hsalsa20(key, nonce[:16]); st = salsa20_stream(sub, nonce[16:], 32 + len(msg))
    ct = bytes(a^b for a,b in zip(msg, st[32:])); return poly1305(st[:32], ct) + ct

def pem_decode(text):
    lines = text.strip().splitlines(); typ = lines[0][len('-----BEGIN '):-5]
    return typ, base64.b64decode(''.join(l for l in lines[1:-1] if ':' not in l))
def pem_encode(typ, der):
    b = base64.b64encode(der).decode()
    return f'-----BEGIN {typ}-----\n' + '\n'.join(textwrap.wrap(b, 64)) + f'\n-----END {typ}-----\n'

def decrypt(pem_text, password):
    typ, blob = pem_decode(pem_text)
    assert typ in ('ENCRYPTED COSIGN PRIVATE KEY','ENCRYPTED SIGSTORE PRIVATE KEY'), typ
    d = json.loads(blob)
    assert d['kdf']['name'] == 'scrypt' and d['cipher']['name'] == 'nacl/secretbox'
    p = d['kdf']['params']
    key = hashlib.scrypt(password, salt=base64.b64decode(d['kdf']['salt']), n=p['N'], r=p['r'], p=p['p'], maxmem=512*1024*1024, dklen=32)
    return typ, d, secretbox_open(base64.b64decode(d['ciphertext']), base64.b64decode(d['cipher']['nonce']), key)

def encrypt(der, password, N=32768, typ='ENCRYPTED COSIGN PRIVATE KEY'):
    salt = os.urandom(32); nonce = os.urandom(24)
    key = hashlib.scrypt(password, salt=salt, n=N, r=8, p=1, maxmem=512*1024*1024, dklen=32)
    d = {"kdf":{"name":"scrypt","params":{"N":N,"r":8,"p":1},"salt":base64.b64encode(salt).decode()},
         "cipher":{"name":"nacl/secretbox","nonce":base64.b64encode(nonce).decode()},
         "ciphertext":base64.b64encode(secretbox_seal(der, nonce, key)).decode()}
    return pem_encode(typ, json.dumps(d, separators=(',',':')).encode())

if __name__ == '__main__':
    if sys.argv[1] == 'decrypt':
        typ, d, der = decrypt(open(sys.argv[2]).read(), sys.argv[3].encode())
        print('pem type:', typ); print('json:', json.dumps(d)[:200]); print('plaintext len:', len(der)); print('plaintext hex:', der.hex())
    elif sys.argv[1] == 'decrypt-pem':
        typ, d, der = decrypt(open(sys.argv[2]).read(), sys.argv[3].encode())
        sys.stdout.write(pem_encode('PRIVATE KEY', der))
    elif sys.argv[1] == 'encrypt':
        typ, der = pem_decode(open(sys.argv[2]).read()); assert typ == 'PRIVATE KEY'
        sys.stdout.write(encrypt(der, sys.argv[3].encode(), int(sys.argv[4]) if len(sys.argv) > 4 else 32768))
