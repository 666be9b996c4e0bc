#!/bin/bash
# The examples of docs/API.md, "Repairing a wrong merge": starts a server on a temporary data
# directory (port 3918), makes a shop's counter phone merge three customers, then runs every
# curl of that section and prints it with its answer. BIN=target/release/idrecon to use a
# release build. Needs curl and jq.
BIN=${BIN:-./target/debug/idrecon}
D=$(mktemp -d)
$BIN serve --data-dir $D --listen 127.0.0.1:3918 >/tmp/split-demo.log 2>&1 &
PID=$!
sleep 1.5
U=http://127.0.0.1:3918
run() { echo "\$ $*" | sed "s#$U#localhost:3000#g"; eval "$@" ; echo; echo; }
J="-H 'content-type: application/json'"
run "curl -s $U/identify $J -d '{\"email\":\"ann@example.com\",\"phoneNumber\":\"5550100\"}'"
run "curl -s $U/identify $J -d '{\"email\":\"bob@example.com\",\"phoneNumber\":\"5550100\"}'"
run "curl -s $U/identify $J -d '{\"email\":\"carl@example.com\",\"phoneNumber\":\"5550100\"}'"
run "curl -s $U/identify $J -d '{\"email\":\"ann@example.com\",\"phoneNumber\":\"5550001\"}'"
run "curl -s $U/identities/2/links | jq ."
run "curl -s $U/identities/2/split $J -d '{\"phoneNumbers\":[\"5550100\"]}' | jq ."
run "curl -s $U/identify $J -d '{\"email\":\"bob@example.com\",\"phoneNumber\":\"5550100\"}'"
run "curl -s '$U/identities?phoneNumber=5550100'"
run "curl -s $U/identities/2/history | jq -c '.events[]'"
run "curl -s $U/identities/1/history | jq -c '.events[] | select(.type == \"split\")'"
run "curl -s $U/identities/1/split $J -d '{\"emails\":[\"nobody@example.com\"]}'"
run "curl -s $U/admin/blocked-values"
run "curl -s $U/identify $J -d '{\"email\":\"bob@example.com\",\"phoneNumber\":\"5550001\"}'"
run "curl -s -X POST '$U/admin/blocked-values?retroactive=true' $J -d '{\"emails\":[\"ann@example.com\"]}'"
run "curl -s -X DELETE $U/admin/blocked-values $J -d '{\"phoneNumbers\":[\"5550100\"],\"emails\":[\"nobody@example.com\"]}'"
run "curl -s $U/identities/2/split $J -d '{\"phones\":[\"5550100\"]}'"
kill $PID; wait $PID 2>/dev/null; rm -rf $D
