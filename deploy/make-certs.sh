#!/bin/sh
# Make a private CA, a collector certificate and (optionally) agent client certificates with openssl.
#   deploy/make-certs.sh OUTDIR COLLECTOR_NAMES [CLIENT_NAME ...]
# COLLECTOR_NAMES: comma-separated DNS names / IP addresses agents dial, e.g.
#   c4-collector.example.internal,10.0.0.5      (systemd)
#   c4-collector.c4.svc,c4-collector             (Helm release "c4" in namespace c4)
# Writes OUTDIR/ca.crt, ca.key (keep it offline), collector.crt, collector.key, and
# CLIENT_NAME.crt/.key for mutual TLS. Certificates are valid for 825 days.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 OUTDIR COLLECTOR_NAMES [CLIENT_NAME ...]" >&2; exit 2; }
out=$1; names=$2; shift 2
command -v openssl >/dev/null || { echo "$0: openssl not found" >&2; exit 1; }
mkdir -p "$out"; umask 077
san=""
for n in $(echo "$names" | tr ',' ' '); do
  case "$n" in
    *[!0-9.]*) san="$san,DNS:$n" ;;
    *) san="$san,IP:$n" ;;
  esac
done
san=${san#,}
first=$(echo "$names" | cut -d, -f1)
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
if [ ! -f "$out/ca.key" ]; then
  key "$out/ca.key"
  openssl req -x509 -new -key "$out/ca.key" -sha256 -days 3650 -subj "/CN=c4-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.crt"
fi
leaf() {  # name, subject CN, extensions
  key "$out/$1.key"
  openssl req -new -key "$out/$1.key" -subj "/CN=$2" -out "$out/$1.csr"
  printf '%s\n' "$3" > "$out/$1.ext"
  openssl x509 -req -in "$out/$1.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$out/$1.ext" -out "$out/$1.crt" 2>/dev/null
  rm -f "$out/$1.csr" "$out/$1.ext"
}
leaf collector "$first" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san"
for client in "$@"; do
  leaf "$client" "$client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
done
chmod 0644 "$out"/*.crt
echo "wrote $out: ca.crt ca.key collector.crt collector.key${*:+ and client certificates for: $*}"
