#!/usr/bin/env bash
# The injector's serving certificate without cert-manager: a CA of its own and a serving
# certificate for the webhook Service's DNS name, made with openssl, and what to apply.
#
#   scripts/injector-certs.sh OUT_DIR [NAMESPACE] [SERVICE] [DAYS]
#
# Writes to OUT_DIR (made if missing, 0700):
#   ca.crt, ca.key       the CA (keep ca.key offline: it signs what the apiserver trusts)
#   tls.crt, tls.key     the serving certificate (SAN: SERVICE.NAMESPACE.svc) and its key
#   secret.yaml          the Secret probe-gateway-inject-tls the injector's Deployment mounts
#   cabundle-patch.json  a JSON Patch setting the CA as each webhook's clientConfig.caBundle
# and prints the two commands that apply them. Then, in deploy/injector/injector.yaml,
# leave out the cert-manager Issuer and Certificate and the inject-ca-from annotation.
# Renewing: run it again with the same OUT_DIR (the CA is kept, the serving certificate
# made anew) and apply the Secret: the injector reads the new files without a restart.
set -euo pipefail

out="${1:?usage: scripts/injector-certs.sh OUT_DIR [NAMESPACE] [SERVICE] [DAYS]}"
namespace="${2:-virt-probe-gateway}"
service="${3:-probe-gateway-inject}"
days="${4:-365}"
dns="$service.$namespace.svc"
command -v openssl >/dev/null || { echo "error: openssl is not installed (apt-get install openssl)" >&2; exit 1; }

mkdir -p "$out"
chmod 0700 "$out"
cd "$out"
if [ ! -s ca.key ] || [ ! -s ca.crt ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
    -keyout ca.key -out ca.crt -days 3650 -subj "/CN=probe-gateway-inject CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
fi
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
  -keyout tls.key -out tls.csr -subj "/CN=$dns" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.%s,DNS:%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
  "$dns" "$service" "$namespace" "$service" > tls.ext
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
  -days "$days" -extfile tls.ext -out tls.crt 2>/dev/null
rm -f tls.csr tls.ext ca.srl
chmod 0600 ca.key tls.key

b64() { base64 -w0 "$1"; }
cat > secret.yaml <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: probe-gateway-inject-tls
  namespace: $namespace
type: kubernetes.io/tls
data:
  tls.crt: $(b64 tls.crt)
  tls.key: $(b64 tls.key)
  ca.crt: $(b64 ca.crt)
YAML
bundle="$(b64 ca.crt)"
patch=""
for i in 0 1 2; do
  patch="$patch${patch:+,}{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$bundle\"}"
done
echo "[$patch]" > cabundle-patch.json

cat <<TEXT
wrote $out: ca.crt, ca.key, tls.crt, tls.key (for $dns, $days days), secret.yaml, cabundle-patch.json
apply:
  kubectl apply -f $out/secret.yaml
  kubectl patch mutatingwebhookconfiguration probe-gateway-inject --type=json --patch-file $out/cabundle-patch.json
TEXT
