#!/bin/bash
# The examples of docs/API.md: starts a server on a temporary data directory (port 3917),
# runs every curl of the document and prints it with its answer. BIN=target/release/idrecon
# to use a release build. Needs curl and jq.
BIN=${BIN:-./target/debug/idrecon}
D=$(mktemp -d)
$BIN serve --data-dir $D --listen 127.0.0.1:3917 --max-identity-size 3 --blocked-values recommended >/tmp/demo.log 2>&1 &
PID=$!
sleep 1.5
U=http://127.0.0.1:3917
run() { echo "\$ $*" | sed "s#$U#localhost:3000#g"; eval "$@" ; echo; echo; }
q() { curl -s -H 'content-type: application/json' "$@"; }
q $U/identify -d '{"email":"lorraine@hillvalley.edu","phoneNumber":"123456"}' >/dev/null
q $U/identify -d '{"email":"mcfly@hillvalley.edu","phoneNumber":"123456"}' >/dev/null
q $U/identify -d '{"email":"george@hillvalley.edu","phoneNumber":"919191"}' >/dev/null
q $U/identify -d '{"email":"biffsucks@hillvalley.edu","phoneNumber":"717171"}' >/dev/null
run "curl -s '$U/identities?email=mcfly@hillvalley.edu'"
run "curl -s '$U/identities?email=nobody@hillvalley.edu'"
run "curl -s '$U/identities?email=mcfly@hillvalley.edu&phoneNumber=919191'"
run "curl -s -X POST $U/identify -H 'content-type: application/json' -d '{\"email\":\"george@hillvalley.edu\",\"phoneNumber\":\"717171\"}'"
run "curl -s -X POST $U/identify -H 'content-type: application/json' -d '{\"email\":\"george@hillvalley.edu\",\"phoneNumber\":\"123456\"}' -i | grep -i -e outcome -e contact"
run "curl -s $U/identities/4"
run "curl -s -X DELETE $U/contacts/3"
run "curl -s -X DELETE $U/contacts/3"
run "curl -s $U/identities/4/history | jq ."
run "curl -s -X POST $U/identify -H 'content-type: application/json' -d '{\"email\":\"test@test.com\",\"phoneNumber\":\"555-0199\"}'"
run "curl -s -X POST $U/identify -H 'content-type: application/json' -d '{\"email\":\"test@test.com\",\"phoneNumber\":\"555-0142\"}'"
run "curl -s -X DELETE '$U/identities/4?erase=true'"
run "curl -s $U/identities/4"
run "curl -s -X POST $U/admin/compact"
run "grep -rl biffsucks $D || echo 'no file holds the erased values'"
kill $PID; wait $PID 2>/dev/null
rm -rf $D
