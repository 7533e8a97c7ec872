#!/usr/bin/env bash
# `strata serve` over raw HTTP (curl): server-sent events framing, every row
# of docs/serve.md's error table, context and body limits, chat template
# errors, the bounded queue, API keys, the loading phase, /metrics, stop
# strings, logprobs, the default address and SIGTERM.
# usage: serve_http.sh STRATA_BIN PROJECT_ROOT
set -uo pipefail
BIN=$1 ROOT=$2
T=$(mktemp -d)
source "$ROOT/tests/e2e/serve_common.bash"
trap serve_cleanup EXIT
H="$PY $ROOT/tests/e2e/serve_http.py"
pass=0 fail=0
ok() { echo "ok: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1"; fail=$((fail + 1)); }

# call METHOD URL [curl args]: the status in $code, the body in $T/body, the headers in $T/hdr.
call() {
  local m=$1 u=$2
  shift 2
  code=$(curl -s -o "$T/body" -D "$T/hdr" -w '%{http_code}' -X "$m" "$@" "$u")
}
# post URL JSON [curl args]
post() {
  local u=$1 b=$2
  shift 2
  call POST "$u" -H 'Content-Type: application/json' -H 'Expect:' --data-binary "$b" "$@"
}
# expect_error NAME STATUS TYPE CODE PARAM [MESSAGE_SUBSTRING]: the last answer.
expect_error() {
  local name=$1 status=$2 why
  shift 2
  [ "$code" = "$status" ] || { bad "$name: status $code, expected $status: $(head -c 300 "$T/body")"; return; }
  why=$($H error "$T/body" "$status" "$@")
  [ -z "$why" ] && ok "$name: $status $1${2:+ / $2}${3:+ (param $3)}" || bad "$name: $why"
}
# expect_status NAME STATUS: the last answer.
expect_status() {
  [ "$code" = "$2" ] && ok "$1: $2" || bad "$1: status $code, expected $2: $(head -c 300 "$T/body")"
}
j() { $H get "$T/body" "$1"; }
# metric URL NAME LABELS [curl args]: a sample's value now.
metric() {
  local u=$1 n=$2 l=$3
  shift 3
  curl -s "$@" "$u/metrics" > "$T/metrics.now"
  $H sample "$T/metrics.now" "$n" "$l"
}
# until_metric URL NAME LABELS VALUE [curl args]: waits up to 10 s for the value.
until_metric() {
  local u=$1 n=$2 l=$3 v=$4 i
  shift 4
  for i in $(seq 100); do
    [ "$(metric "$u" "$n" "$l" "$@")" = "$v" ] && return 0
    sleep 0.1
  done
  return 1
}

need_shared
make_variants
# A fourth variant: the base's weights with Mistral v0.1's chat template, which raises on roles other than
# user and assistant.
cp -r "$T/m" "$T/m-mistral"
$PY -c "
import json, sys
p = sys.argv[1] + '/tokenizer_config.json'
c = json.load(open(p)); c['chat_template'] = open(sys.argv[2]).read(); json.dump(c, open(p, 'w'))" \
  "$T/m-mistral" "$TEMPLATES/mistralai-Mistral-7B-Instruct-v0.1.jinja"
printf '%s\n' "models:" "  - model: $T/m-mistral" "merge_method: passthrough" "dtype: bfloat16" > "$T/mistral.yml"
"$BIN" compile "$T/mistral.yml" --name chat-mistral --store "$T/store" -q > /dev/null || { echo "FAIL: compile chat-mistral"; exit 1; }

export STRATA_BATCH_INVARIANT=1
P="Once upon a time"
N=24
"$BIN" run base --prompt "$P" -n $N --json --store "$T/store" > "$T/run-base.json" || bad "strata run base"
EXPECT=$($H get "$T/run-base.json" "json.dumps(d['text'])")
CHATQ="Tell me about the sea."
"$BIN" run base --chat --prompt "$CHATQ" -n 8 --json --store "$T/store" > "$T/run-chat.json" || bad "strata run --chat"
EXPECT_CHAT=$($H get "$T/run-chat.json" "json.dumps(d['text'])")

# --- S2: slow to load (3 s), an API key, one running and one queued request at most.
STRATA_SERVE_TEST_LOAD_DELAY_S=3 serve_start "$T/s2.log" --models base --api-key sekrit --max-batch 1 --max-queue 1 || exit 1
S2_PID=$SERVE_PID S2=http://127.0.0.1:$SERVE_PORT
KEY=(-H "Authorization: Bearer sekrit")
call GET "$S2/health"
expect_error "GET /health while loading" 503 unavailable_error loading ""
call GET "$S2/v1/models" "${KEY[@]}"
expect_error "GET /v1/models while loading" 503 unavailable_error "" ""
# --- S3: the API key from $STRATA_API_KEY; requests may take 1 s.
STRATA_API_KEY=envkey serve_start "$T/s3.log" --models base --timeout 1 || exit 1
S3_PID=$SERVE_PID S3=http://127.0.0.1:$SERVE_PORT
# --- S1: the main server.
serve_start "$T/s1.log" --batch-invariant --ctx 64 --max-body 2048 || exit 1
S1_PID=$SERVE_PID S1_PORT=$SERVE_PORT S1=http://127.0.0.1:$SERVE_PORT
serve_ready "$S1_PORT" || exit 1

# The default address: one listener on the port, on 127.0.0.1 (0100007F).
hex=$(printf '%04X' "$S1_PORT")
listeners=$(cat /proc/net/tcp /proc/net/tcp6 2> /dev/null | awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { print $2 }')
[ "$listeners" = "0100007F:$hex" ] && ok "listens on 127.0.0.1 only" || bad "listeners on port $S1_PORT: $listeners"
grep -q "listening on http://127.0.0.1:$S1_PORT " "$T/s1.log" && ok "start-up line names 127.0.0.1:$S1_PORT" || bad "start-up: $(cat "$T/s1.log")"

call GET "$S1/health"
[ "$code" = 200 ] && [ "$(j 'd')" = "{'status': 'ok'}" ] && ok "GET /health: 200 {\"status\":\"ok\"}" || bad "health: $code $(cat "$T/body")"

# --- a greedy completion equals strata run; then the same streamed, as raw SSE.
REQ='{"model":"base","prompt":"'"$P"'","max_tokens":'$N',"temperature":0'
post "$S1/v1/completions" "$REQ}"
[ "$code" = 200 ] && [ "$(j "json.dumps(d['choices'][0]['text'])")" = "$EXPECT" ] && ok "completion = strata run" ||
  bad "completion: $code $(head -c 400 "$T/body") vs $EXPECT"
curl -s -N --raw -D "$T/hdr" -o "$T/raw" -H 'Content-Type: application/json' --data-binary "$REQ,\"stream\":true}" "$S1/v1/completions"
grep -qi '^content-type: text/event-stream' "$T/hdr" && ok "SSE: Content-Type text/event-stream" || bad "SSE headers: $(cat "$T/hdr")"
grep -qi '^transfer-encoding: chunked' "$T/hdr" && ! grep -qi '^content-length' "$T/hdr" && ok "SSE: chunked transfer" ||
  bad "SSE not chunked: $(cat "$T/hdr")"
$H sse "$T/raw" completions > "$T/sse.json"
S() { $H get "$T/sse.json" "$1"; }
[ "$(S "d['problems']")" = "[]" ] && ok "SSE framing: chunks, 'data: {json}' + blank line, data: [DONE] last" || bad "SSE: $(S "d['problems']")"
[ "$(S "json.dumps(d['text'])")" = "$EXPECT" ] && ok "SSE: text = strata run" || bad "SSE text $(S "json.dumps(d['text'])") vs $EXPECT"
[ "$(S "d['finish'][-1] == 'length' and all(f is None for f in d['finish'][:-1]) and d['events'] >= 2")" = True ] &&
  ok "SSE: $(S "d['events']") events, only the last with finish_reason length" || bad "SSE finish: $(S "d['finish']")"
CHAT='{"model":"base","messages":[{"role":"user","content":"'"$CHATQ"'"}],"max_tokens":8,"temperature":0'
curl -s -N --raw -o "$T/raw" -H 'Content-Type: application/json' \
  --data-binary "$CHAT,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" "$S1/v1/chat/completions"
$H sse "$T/raw" chat > "$T/sse.json"
[ "$(S "d['problems']")" = "[]" ] && ok "chat SSE framing, first chunk with delta.role" || bad "chat SSE: $(S "d['problems']")"
[ "$(S "json.dumps(d['text'])")" = "$EXPECT_CHAT" ] && ok "chat SSE: text = strata run --chat" || bad "chat SSE text $(S "json.dumps(d['text'])") vs $EXPECT_CHAT"
[ "$(S "d['last']['choices'] == [] and d['last']['usage']['completion_tokens'] == 8")" = True ] &&
  ok "chat SSE: a last chunk with choices [] and usage" || bad "chat SSE last event: $(S "d['last']")"

# --- the error table.
C=$S1/v1/completions CC=$S1/v1/chat/completions
post "$C" '{"model":"base","prompt":'
expect_error "malformed JSON" 400 invalid_request_error "" "" "not valid JSON"
post "$C" '["model","base"]'
expect_error "body not an object" 400 invalid_request_error "" ""
post "$C" '{"model":5,"prompt":"hi"}'
expect_error "model a number" 400 invalid_request_error "" model
post "$C" '{"model":"base","prompt":"hi","max_tokens":"16"}'
expect_error "max_tokens a string" 400 invalid_request_error "" max_tokens
post "$C" '{"model":"base","prompt":"hi","max_tokens":0}'
expect_error "max_tokens 0" 400 invalid_request_error "" max_tokens
post "$CC" '{"model":"base","messages":"hi"}'
expect_error "messages not a list" 400 invalid_request_error "" messages
post "$CC" '{"model":"base","messages":[{"content":"hi"}]}'
expect_error "message without role" 400 invalid_request_error "" "messages[0].role"
post "$C" '{"model":"base","prompt":"hi","temperature":"hot"}'
expect_error "temperature \"hot\"" 400 invalid_request_error "" temperature
post "$C" '{"model":"base","prompt":"hi","temperature":3}'
expect_error "temperature 3" 400 invalid_request_error "" temperature
post "$C" '{"model":"base","prompt":"hi","stop":5}'
expect_error "stop a number" 400 invalid_request_error "" stop
post "$C" '{"model":"base","prompt":"hi","n":2}'
expect_error "n = 2" 400 invalid_request_error "" n
post "$C" '{"model":"base","prompt":"hi","presence_penalty":0.5}'
expect_error "presence_penalty refused" 400 invalid_request_error "" presence_penalty
post "$C" '{"model":"base","prompt":[1,99999]}'
expect_error "token id past the vocabulary" 400 invalid_request_error "" prompt
post "$C" '{"model":"nope","prompt":"hi"}'
expect_error "unknown model" 404 invalid_request_error model_not_found model "base"
call GET "$S1/v1/nope"
expect_error "unknown path" 404 not_found_error "" ""
call POST "$S1/v1/engines"
expect_error "unknown path (POST)" 404 not_found_error "" ""
call GET "$C"
expect_error "GET /v1/completions" 405 invalid_request_error "" ""
call DELETE "$S1/v1/models"
expect_error "DELETE /v1/models" 405 invalid_request_error "" ""
# --max-body 2048: padding with JSON whitespace to just under and just over it.
small='{"model":"base","prompt":[1,2],"max_tokens":1}'
pad() { printf '%s%*s}' "${small%\}}" $(($1 - ${#small})) ''; }
post "$C" "$(pad 2048)"
expect_status "a body of 2048 bytes (the limit)" 200
post "$C" "$(pad 2049)"
expect_error "a body of 2049 bytes" 413 invalid_request_error request_too_large "" "2048"
post "$C" "$(pad 100000)"
expect_error "a body of 100000 bytes" 413 invalid_request_error request_too_large ""
call GET "$S1/health"
expect_status "the server answers after a 413" 200
# --ctx 64: prompt + max_tokens may come to 64, not 65; a 64-token prompt leaves no room.
post "$C" '{"model":"base","prompt":[1,2,3,4],"max_tokens":60,"temperature":0,"ignore_eos":true}'
[ "$code" = 200 ] && [ "$(j "d['usage']['completion_tokens']")" = 60 ] && ok "prompt 4 + max_tokens 60 = --ctx 64: 200, 60 tokens" ||
  bad "prompt 4 + 60: $code $(head -c 300 "$T/body")"
post "$C" '{"model":"base","prompt":[1,2,3,4],"max_tokens":61}'
expect_error "prompt 4 + max_tokens 61 past --ctx 64" 400 invalid_request_error context_length_exceeded max_tokens "64"
post "$C" "{\"model\":\"base\",\"prompt\":[$(seq -s, 1 64)]}"
expect_error "a 64-token prompt with --ctx 64" 400 invalid_request_error context_length_exceeded max_tokens
post "$CC" '{"model":"base","messages":[{"role":"user","content":"'"$(printf 'word %.0s' $(seq 80))"'"}]}'
expect_error "a chat prompt past --ctx" 400 invalid_request_error context_length_exceeded max_tokens
# Chat templates that raise.
post "$CC" '{"model":"base","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}'
expect_error "Llama-2 template: two user turns" 400 invalid_request_error template_error messages "Conversation roles must alternate"
post "$CC" '{"model":"chat-mistral","messages":[{"role":"user","content":"hi"},{"role":"system","content":"be brief"}],"max_tokens":2}'
expect_error "Mistral v0.1 template: a system turn" 400 invalid_request_error template_error messages "Only user and assistant roles are supported"
post "$CC" '{"model":"chat-mistral","messages":[{"role":"user","content":"hi"}],"max_tokens":2}'
expect_status "Mistral v0.1 template: one user turn" 200

# --- stop strings, cut where they begin in strata run's greedy text (also across token boundaries).
stopcase() {  # NAME STOPS_JSON EXPECTED_TEXT_JSON
  local name=$1 stops=$2 want
  want=$($PY -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1])))' "$3")
  post "$C" "$REQ,\"stop\":$stops}"
  [ "$code" = 200 ] && [ "$(j "json.dumps(d['choices'][0]['text'])")" = "$want" ] &&
    [ "$(j "d['choices'][0]['finish_reason']")" = stop ] && ok "stop $name: text ends before it, finish_reason stop" ||
    bad "stop $name: $code $(head -c 300 "$T/body"); expected text $want"
  curl -s -N --raw -o "$T/raw" -H 'Content-Type: application/json' --data-binary "$REQ,\"stop\":$stops,\"stream\":true}" "$C"
  $H sse "$T/raw" completions > "$T/sse.json"
  [ "$(S "json.dumps(d['text'])")" = "$want" ] && [ "$(S "d['finish'][-1]")" = stop ] && [ "$(S "d['problems']")" = "[]" ] &&
    ok "stop $name, streamed" || bad "stop $name streamed: $(cat "$T/sse.json")"
}
# From the expected text: a 4-character string at 1/3 and a 3-character one at 2/3 of it.
read -r S_MID S_MID_WANT S_LATE S_EARLY_WANT <<< "$($PY -c "
import json, sys
t = json.loads(sys.argv[1])
def at(k, n):
    while t[k:k + n].strip() == '' or len(t[k:k + n]) < n: k += 1
    s = t[k:k + n]; return s, t[:t.find(s)]
a, aw = at(len(t) // 3, 4); b, bw = at(2 * len(t) // 3, 3)
print(json.dumps(a).replace(' ', '\\\\u0020'), json.dumps(aw).replace(' ', '\\\\u0020'), json.dumps(b).replace(' ', '\\\\u0020'), json.dumps(aw if len(aw) <= len(bw) else bw).replace(' ', '\\\\u0020'))" "$EXPECT")"
stopcase "$S_MID" "$S_MID" "$S_MID_WANT"
stopcase "[$S_LATE, $S_MID] (the earlier wins)" "[$S_LATE,$S_MID]" "$S_EARLY_WANT"
[ "$($PY -c "import json,sys; print(len(json.loads(sys.argv[1])) > 0)" "$S_MID_WANT")" = True ] && ok "the stop string is not at the start" || bad "stop string at the start"

# --- logprobs: greedy picks the top alternative, so the chosen logprob is the top one.
post "$CC" "$CHAT,\"logprobs\":true,\"top_logprobs\":3}"
[ "$code" = 200 ] && [ "$(j "json.dumps(d['choices'][0]['message']['content'])")" = "$EXPECT_CHAT" ] && ok "chat with logprobs: content = strata run --chat" || bad "chat logprobs: $code $(head -c 300 "$T/body")"
why=$(j "[w for w in [
  'count' if len(d['choices'][0]['logprobs']['content']) != d['usage']['completion_tokens'] else '',
  *[f'entry {i}: {e}' for i, e in enumerate(d['choices'][0]['logprobs']['content']) if not (
    isinstance(e['token'], str) and e['logprob'] <= 0 and tokstr(e['bytes']) == e['token'] and
    len(e['top_logprobs']) == 3 and all(t['logprob'] <= 0 and tokstr(t['bytes']) == t['token'] for t in e['top_logprobs']) and
    [t['logprob'] for t in e['top_logprobs']] == sorted([t['logprob'] for t in e['top_logprobs']], reverse=True) and
    e['top_logprobs'][0]['logprob'] == e['logprob'] and e['top_logprobs'][0]['token'] == e['token'])],
  'bytes do not join to the content' if bytes(sum((e['bytes'] for e in d['choices'][0]['logprobs']['content']), [])).decode('utf-8', 'replace').lstrip(' ') != d['choices'][0]['message']['content'].lstrip(' ') else ''] if w]")
[ "$why" = "[]" ] && ok "chat logprobs: one entry per token, token/logprob<=0/bytes, 3 top_logprobs, greedy = the top" || bad "chat logprobs: $why"
post "$C" '{"model":"base","prompt":"'"$P"'","max_tokens":8,"temperature":0,"logprobs":2}'
why=$(j "[w for w in [
  'count' if not len(d['choices'][0]['logprobs']['tokens']) == len(d['choices'][0]['logprobs']['token_logprobs']) == len(d['choices'][0]['logprobs']['top_logprobs']) == len(d['choices'][0]['logprobs']['text_offset']) == d['usage']['completion_tokens'] else '',
  'logprob > 0' if any(x > 0 for x in d['choices'][0]['logprobs']['token_logprobs']) else '',
  'top' if any(len(t) != 2 or max(t.values()) != x for t, x in zip(d['choices'][0]['logprobs']['top_logprobs'], d['choices'][0]['logprobs']['token_logprobs'])) else '',
  'offsets' if d['choices'][0]['logprobs']['text_offset'][0] != 0 or d['choices'][0]['logprobs']['text_offset'] != sorted(d['choices'][0]['logprobs']['text_offset']) or d['choices'][0]['logprobs']['text_offset'][-1] > len(d['choices'][0]['text'].encode()) else ''] if w]")
[ "$why" = "[]" ] && ok "completions logprobs 2: tokens, logprobs<=0, 2 top each with the chosen one on top, offsets" || bad "completions logprobs: $why: $(head -c 600 "$T/body")"
post "$CC" "$CHAT,\"logprobs\":true,\"top_logprobs\":21}"
expect_error "top_logprobs 21" 400 invalid_request_error "" top_logprobs
post "$CC" "$CHAT,\"top_logprobs\":2}"
expect_error "top_logprobs without logprobs" 400 invalid_request_error "" top_logprobs

# --- /metrics.
before=$(metric "$S1" strata_requests_total 'endpoint="/v1/completions",status="200"')
post "$C" "$REQ}"
after=$(metric "$S1" strata_requests_total 'endpoint="/v1/completions",status="200"')
[ "$((after - before))" = 1 ] && ok "strata_requests_total{/v1/completions,200} counts one request ($before -> $after)" || bad "requests_total $before -> $after"
call GET "$S1/metrics"
grep -qi '^content-type: text/plain; version=0.0.4' "$T/hdr" && ok "/metrics: Content-Type text/plain; version=0.0.4" || bad "/metrics headers: $(cat "$T/hdr")"
why=$($H metrics "$T/body")
[ -z "$why" ] && ok "/metrics: Prometheus text format" || bad "/metrics format: $why"
for m in strata_requests_total strata_time_to_first_token_seconds_bucket strata_kv_blocks_used strata_weight_resident_bytes \
  strata_weight_shared_saved_bytes strata_queue_depth; do
  grep -q "^${m}[{ ]" "$T/body" && ok "/metrics has $m" || bad "/metrics lacks $m"
done
grep -q '^# TYPE strata_time_to_first_token_seconds histogram$' "$T/body" && ok "/metrics: ttft is a histogram" || bad "no TYPE histogram for ttft"
inf=$($H sample "$T/body" strata_time_to_first_token_seconds_bucket 'model="base",le="+Inf"')
cnt=$($H sample "$T/body" strata_time_to_first_token_seconds_count 'model="base"')
[ "$inf" = "$cnt" ] && [ "$cnt" -gt 5 ] && ok "/metrics: ttft le=+Inf bucket = count ($cnt)" || bad "ttft +Inf $inf, count $cnt"
[ "$($H sample "$T/body" strata_kv_blocks_used 'model="base"')" = 0 ] && [ "$($H sample "$T/body" strata_queue_depth '')" = 0 ] &&
  ok "/metrics idle: no KV blocks used, queue empty" || bad "/metrics idle: $(grep -E 'kv_blocks_used|queue_depth' "$T/body")"
resident=$($H sample "$T/body" strata_weight_resident_bytes '')
saved=$($H sample "$T/body" strata_weight_shared_saved_bytes '')
$PY -c "import sys; r, s, b = map(float, sys.argv[1:]); sys.exit(0 if b <= r < 1.5 * b and s >= 2 * b else 1)" "$resident" "$saved" "$((2 * BASE_PARAMS))" &&
  ok "/metrics: weights resident once ($resident B), sharing saves $saved B (4 variants over ~$((2 * BASE_PARAMS)) B)" ||
  bad "weights resident $resident, saved $saved, base $((2 * BASE_PARAMS))"

# --- S2 and S3: API keys, the queue.
LONG='{"model":"base","prompt":"hi","max_tokens":4000,"ignore_eos":true,"temperature":0}'
serve_ready "${S2##*:}" || exit 1
call GET "$S2/v1/models"
expect_error "no API key" 401 authentication_error invalid_api_key ""
call GET "$S2/v1/models" -H "Authorization: Bearer wrong"
expect_error "a wrong API key" 401 authentication_error invalid_api_key ""
call GET "$S2/v1/models" -H "Authorization: sekrit"
expect_error "the key without Bearer" 401 authentication_error invalid_api_key ""
post "$S2/v1/completions" '{"model":"base","prompt":"hi","max_tokens":2}' -H "Authorization: Bearer sekri"
expect_error "POST with a wrong key" 401 authentication_error invalid_api_key ""
call GET "$S2/metrics"
expect_error "/metrics without the key" 401 authentication_error invalid_api_key ""
call GET "$S2/v1/models" "${KEY[@]}"
[ "$code" = 200 ] && [ "$(j "[m['id'] for m in d['data']]")" = "['base']" ] && ok "the right API key: 200 (--models base)" || bad "with the key: $code $(head -c 200 "$T/body")"
call GET "$S2/health"
expect_status "/health needs no key" 200
serve_ready "${S3##*:}" || exit 1
call GET "$S3/v1/models"
expect_error "\$STRATA_API_KEY: no key" 401 authentication_error invalid_api_key ""
call GET "$S3/v1/models" "${KEY[@]}"
expect_error "\$STRATA_API_KEY: another key" 401 authentication_error invalid_api_key ""
call GET "$S3/v1/models" -H "Authorization: Bearer envkey"
expect_status "\$STRATA_API_KEY: its key" 200
call GET "$S3/health"
expect_status "\$STRATA_API_KEY: /health needs no key" 200
# --timeout 1: a 504, or when streaming an error event before [DONE].
EK=(-H "Authorization: Bearer envkey")
post "$S3/v1/completions" "$LONG" "${EK[@]}"
expect_error "past --timeout" 504 timeout_error "" ""
curl -s -N --raw -o "$T/raw" "${EK[@]}" -H 'Content-Type: application/json' --data-binary "${LONG%\}},\"stream\":true}" "$S3/v1/completions"
$H sse "$T/raw" completions > "$T/sse.json"
[ "$(S "d['problems']")" = "[]" ] && [ "$(S "d['last'].get('error', {}).get('type')")" = timeout_error ] &&
  [ "$(S "len(d['text']) > 0")" = True ] && ok "past --timeout, streaming: tokens, then an error event, then [DONE]" ||
  bad "timeout while streaming: $(head -c 300 "$T/sse.json")"

# --max-batch 1 --max-queue 1: one long request runs, one waits, the next is refused.
curl -s -o /dev/null "${KEY[@]}" -H 'Content-Type: application/json' --data-binary "$LONG" "$S2/v1/completions" &
long1=$!
until_metric "$S2" strata_active_sequences '' 1 "${KEY[@]}" && ok "queue: the first long request runs" || bad "queue: no request running"
kv=$(metric "$S2" strata_kv_blocks_used 'model="base"' "${KEY[@]}")
[ "$kv" -gt 0 ] && ok "strata_kv_blocks_used > 0 while it runs ($kv)" || bad "strata_kv_blocks_used $kv while a request runs"
curl -s -o /dev/null "${KEY[@]}" -H 'Content-Type: application/json' --data-binary "$LONG" "$S2/v1/completions" &
long2=$!
until_metric "$S2" strata_queue_depth '' 1 "${KEY[@]}" && ok "queue: the second waits (strata_queue_depth 1)" || bad "queue: depth never 1"
post "$S2/v1/completions" '{"model":"base","prompt":"hi","max_tokens":2}' "${KEY[@]}"
expect_error "queue full" 429 rate_limit_error queue_full ""
ra=$(tr -d '\r' < "$T/hdr" | sed -n 's/^[Rr]etry-[Aa]fter: *//p')
[[ "$ra" =~ ^[0-9]+$ ]] && [ "$ra" -ge 1 ] && [ "$ra" -le 60 ] && ok "429 has Retry-After: $ra (1..60 s)" || bad "Retry-After '$ra': $(cat "$T/hdr")"
still=$(metric "$S2" strata_active_sequences '' "${KEY[@]}")
[ "$still" = 1 ] && ok "the long request was still running when the 429 came" || bad "active sequences $still after the 429: the test raced"
kill "$long1" "$long2" 2> /dev/null
wait "$long1" "$long2" 2> /dev/null
until_metric "$S2" strata_active_sequences '' 0 "${KEY[@]}" && until_metric "$S2" strata_queue_depth '' 0 "${KEY[@]}" &&
  ok "closing the connections cancels both" || bad "cancelled requests linger: $(grep -E 'active_seq|queue_depth' "$T/metrics.now")"
post "$S2/v1/completions" '{"model":"base","prompt":"hi","max_tokens":2}' "${KEY[@]}"
expect_status "a request after the cancellations" 200

# --- SIGTERM when idle: exit 0, and the port is closed.
for s in "S1 $S1_PID $S1" "S2 $S2_PID $S2" "S3 $S3_PID $S3"; do
  set -- $s
  serve_stop "$2"
  rc=$?
  [ $rc -eq 0 ] && grep -q "shutting down" "$T/$(echo "$1" | tr S s).log" && ok "$1: SIGTERM when idle: exit 0" || bad "$1: SIGTERM: exit $rc: $(tail -3 "$T/$(echo "$1" | tr S s).log")"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$3/health")" = 000 ] && ok "$1: the port is closed after exit" || bad "$1: still answering after exit"
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
