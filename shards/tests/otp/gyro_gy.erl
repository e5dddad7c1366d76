%% gyro_gy: a Gy (RFC 4006 credit-control) client and a stub server on Erlang/OTP's diameter
%% application, used by gyro's tests to check `gyro serve` and gyro's load generator against a
%% strict, independent Diameter stack.
%%
%%   erl -noshell -pa BUILD -run gyro_gy client HOST PORT DEST_REALM MODE SESSIONS CONCURRENCY [DEADLINE_S]
%%   erl -noshell -pa BUILD -run gyro_gy server PORT [strict|lenient]
%%
%% ---- client
%%
%% MODE session: per session CCR-I, CCR-U, CCR-T, each with one Multiple-Services-Credit-Control
%%     for rating group 10 (octets; Requested-Service-Unit on I/U, Used-Service-Unit on U/T),
%%     Service-Context-Id 32251@3gpp.org.
%% MODE event: one CCR EVENT_REQUEST with DIRECT_DEBITING, Service-Identifier 1 and one
%%     service-specific unit, Service-Context-Id 32274@3gpp.org.
%%
%% The client does CER/CEA, keeps at most CONCURRENCY sessions (or events) in flight, checks
%% every CCA, then removes its transport (OTP sends DPR and waits for the DPA). It prints a
%% few `FAIL ...` lines for the first failures and, last, `RESULT ok=N failed=M`; it halts
%% with 0 only when every request passed. A request unanswered in 10 s is a failure; the
%% whole run is bounded by DEADLINE_S (default 120 s), requests not finished by then fail.
%%
%% A CCA passes when OTP decoded it without errors (the `errors` field of the packet, with
%% the default strict settings: strict_mbit, strict_arities), Result-Code is 2001 (an event
%% may also be refused with 4012, DIAMETER_CREDIT_LIMIT_REACHED), Session-Id,
%% Auth-Application-Id, CC-Request-Type and CC-Request-Number echo the request, and in
%% session mode the MSCC for rating group 10 is there with Result-Code 2001 (or 4012,
%% nothing could be granted) and, on I/U with 2001, a Granted-Service-Unit; a successful
%% event has a Granted-Service-Unit with service-specific units (RFC 4006 6.3) and any
%% MSCC in its answer a Result-Code of 2001 or 4012.
%%
%% ---- server
%%
%% A stub credit-control server (Origin-Host stub.otp.gyro.test, Origin-Realm otp.gyro.test)
%% listening on 127.0.0.1:PORT over TCP (PORT 0: any free port). It advertises
%% Auth-Application-Id 4 and Vendor-Specific-Application-Id {10415, 4} with
%% Supported-Vendor-Id 10415, accepts any number of connections from the same peer, and
%% answers every CCR (INITIAL, UPDATE, TERMINATION, EVENT) with a CCA: Result-Code 2001,
%% Session-Id, Auth-Application-Id, CC-Request-Type and CC-Request-Number echoed; for each
%% MSCC of the request an MSCC with its Rating-Group and Service-Identifier(s), Result-Code
%% 2001 and, when the MSCC asked for units, a Granted-Service-Unit equal to its
%% Requested-Service-Unit; a top-level Requested-Service-Unit (events) is granted by a
%% top-level Granted-Service-Unit. No state, nothing charged. Once listening it prints one
%% line, `LISTENING PORT`, and runs until killed.
%%
%% strict (the default): OTP's checks as they are; a CCR with a decode error (an unknown
%%     AVP with the M-bit set: 5001, DIAMETER_AVP_UNSUPPORTED, a missing AVP: 5005, ...)
%%     is answered with that Result-Code and a Failed-AVP, set by OTP.
%% lenient: strict_mbit off, so unknown M-bit AVPs where the grammar has `* [ AVP ]` (the
%%     CCR, MSCC, RSU, USU...) are not errors; and an unknown vendor-specific AVP (3GPP's,
%%     say) that OTP still reports, inside a group whose grammar does not allow other AVPs
%%     (5001 with the M-bit, 5008 without), is ignored too. Other decode errors are
%%     answered as in strict mode.
%%
%% The answer is built in the handle_request callback, in the process OTP spawns for the
%% request (no other process, no logging per request); traffic counters are off.
%%
%% Dictionary: OTP's example RFC 4006 dictionary (rfc4006_cc, inheriting rfc4005_nas),
%% compiled beside this module; no 3GPP AVPs.
-module(gyro_gy).

-include_lib("diameter/include/diameter.hrl").

-export([main/1, client/1, server/1]).
%% diameter_tcp message_cb of the server's transport
-export([message_gate/2]).
%% diameter_app callbacks
-export([peer_up/3, peer_down/3, pick_peer/4, prepare_request/3,
         prepare_retransmit/3, handle_answer/4, handle_error/4,
         handle_request/3]).

-define(SERVICE, gyro_gy_client).
-define(APP, gy).
-define(CC_APP_ID, 4).
-define(ORIGIN_HOST, <<"pcef.otp.gyro.test">>).
-define(ORIGIN_REALM, <<"otp.gyro.test">>).

-define(REQUEST_TIMEOUT_MS, 10000).
-define(DEFAULT_DEADLINE_S, 120).
-define(MAX_FAIL_LINES, 5).

-define(SUCCESS, 2001).
-define(CREDIT_LIMIT_REACHED, 4012).

%% CC-Request-Type
-define(INITIAL, 1).
-define(UPDATE, 2).
-define(TERMINATION, 3).
-define(EVENT, 4).

-define(RATING_GROUP, 10).
-define(MSISDNS, 10000).  % 4917 00000000 .. 4917 00009999

%% ------------------------------------------------------------------ entry points

%% `-run gyro_gy main client ...` or `-run gyro_gy client ...` (`server` likewise).
main(["client" | Args]) -> client(Args);
main(["server" | Args]) -> server(Args);
main(Other) ->
    io:format("FAIL usage: client HOST PORT DEST_REALM session|event SESSIONS CONCURRENCY "
              "[DEADLINE_S] | server PORT [strict|lenient], got ~0p~n", [Other]),
    io:format("RESULT ok=0 failed=0~n"),
    erlang:halt(2).

client(Args) ->
    guard(Args),
    Status = try run(parse(Args))
             catch Class:Reason:Stack ->
                     io:format("FAIL crashed ~0p:~0p ~0p~n", [Class, Reason, Stack]),
                     io:format("RESULT ok=0 failed=~b~n", [expected_guess(Args)]),
                     3
             end,
    erlang:halt(Status).

-record(opts, {host, port, realm, mode, sessions, concurrency, deadline_ms}).

parse([Host, Port, Realm, Mode, Sessions, Conc | Rest])
  when Mode == "session"; Mode == "event" ->
    {ok, Addr} = inet:parse_address(Host),
    Deadline = case Rest of
                   [D | _] -> list_to_integer(D);
                   [] -> ?DEFAULT_DEADLINE_S
               end,
    N = list_to_integer(Sessions),
    C = list_to_integer(Conc),
    true = N >= 0 andalso C >= 1,
    #opts{host = Addr, port = list_to_integer(Port), realm = list_to_binary(Realm),
          mode = list_to_atom(Mode), sessions = N, concurrency = C,
          deadline_ms = Deadline * 1000}.

%% Whatever happens (a stuck call, a crash in OTP), the VM halts: the overall deadline plus
%% time for CER and DPR.
guard(Args) ->
    Ms = try parse(Args) of #opts{deadline_ms = D} -> D catch _:_ -> 0 end + 20000,
    spawn(fun() ->
                  timer:sleep(Ms),
                  io:format("FAIL stuck: still running ~b ms after start~n", [Ms]),
                  io:format("RESULT ok=0 failed=~b~n", [expected_guess(Args)]),
                  erlang:halt(4)
          end).

expected_guess([_, _, _, Mode, Sessions | _]) ->
    try list_to_integer(Sessions) * steps(list_to_atom(Mode)) catch _:_ -> 0 end;
expected_guess(_) -> 0.

steps(session) -> 3;
steps(event) -> 1.

%% ------------------------------------------------------------------ the run

run(#opts{} = O) ->
    Expected = O#opts.sessions * steps(O#opts.mode),
    persistent_term:put({?MODULE, start_us}, erlang:system_time(microsecond)),
    Until = erlang:monotonic_time(millisecond) + O#opts.deadline_ms,
    ok = diameter:start(),
    ok = diameter:start_service(?SERVICE, service_options()),
    true = diameter:subscribe(?SERVICE),
    {ok, Ref} = diameter:add_transport(?SERVICE, {connect,
        [{transport_module, diameter_tcp},
         {transport_config, [{raddr, O#opts.host}, {rport, O#opts.port}]},
         {connect_timer, 30000},
         {dpa_timeout, 3000}]}),
    case await_up(min(10000, O#opts.deadline_ms)) of
        {ok, Caps} ->
            #diameter_caps{origin_host = {_, PeerHost}, product_name = {_, Product}} = Caps,
            io:format("CEA from ~s (~s)~n", [PeerHost, Product]),
            {Ok, Failed} = drive(O, Until),
            Dpa = disconnect(Ref),
            io:format("RESULT ok=~b failed=~b~n", [Ok, Failed]),
            case Failed == 0 andalso Ok == Expected andalso Dpa of
                true -> 0;
                false -> 1
            end;
        {error, Why} ->
            io:format("FAIL CER/CEA ~0p~n", [Why]),
            io:format("RESULT ok=0 failed=~b~n", [Expected]),
            1
    end.

service_options() ->
    [{'Origin-Host', ?ORIGIN_HOST},
     {'Origin-Realm', ?ORIGIN_REALM},
     {'Vendor-Id', 0},
     {'Product-Name', "gyro_gy (OTP diameter)"},
     {'Auth-Application-Id', [?CC_APP_ID]},
     {decode_format, map},
     {string_decode, false},   % OctetString-based values as binaries
     {strict_mbit, true},      % the default, stated: unknown M-bit AVPs are errors
     {application, [{alias, ?APP},
                    {dictionary, rfc4006_cc},
                    {module, ?MODULE},
                    %% hand answers with decode errors to handle_answer/4 (the default,
                    %% discard, would turn them into timeouts)
                    {answer_errors, callback}]}].

await_up(Ms) ->
    receive
        #diameter_event{info = {up, _, {_, Caps}, _, _}} -> {ok, Caps};
        #diameter_event{info = {up, _, {_, Caps}, _}} -> {ok, Caps};
        #diameter_event{info = Info} when element(1, Info) == closed -> {error, Info};
        #diameter_event{} -> await_up(Ms)
    after Ms -> {error, {no_connection_within_ms, Ms}}
    end.

%% Removes the transport: OTP sends DPR and takes the peer down on the DPA, or after
%% dpa_timeout (3 s) without one. OTP drops its counters with the peer, so the DPA is
%% judged by time: down well before dpa_timeout means OTP took gyro's DPA.
disconnect(Ref) ->
    T0 = erlang:monotonic_time(millisecond),
    ok = diameter:remove_transport(?SERVICE, Ref),
    Down = receive #diameter_event{info = {down, _, _, _}} -> true
           after 6000 -> false
           end,
    Ms = erlang:monotonic_time(millisecond) - T0,
    case Down andalso Ms < 2000 of
        true ->
            io:format("DPR/DPA done in ~b ms~n", [Ms]),
            true;
        false ->
            io:format("FAIL DPR: no DPA (peer down ~0p, after ~b ms)~n", [Down, Ms]),
            false
    end.

%% Runs the work on min(CONCURRENCY, SESSIONS) workers that take session numbers from a
%% shared counter, and tallies what they report until all are done or the deadline.
drive(#opts{sessions = N, concurrency = C} = O, Until) ->
    Next = atomics:new(1, []),
    Collector = self(),
    Workers = [spawn(fun() -> worker(O, Next, Collector) end)
               || _ <- lists:seq(1, min(C, N))],
    collect(length(Workers), #{ok => 0, failed => 0, lines => 0, credit_limit => 0},
            N * steps(O#opts.mode), Until).

collect(0, T, _Expected, _Until) ->
    note_credit_limit(T),
    {maps:get(ok, T), maps:get(failed, T)};
collect(Running, T, Expected, Until) ->
    Left = max(0, Until - erlang:monotonic_time(millisecond)),
    receive
        {outcome, ok} ->
            collect(Running, bump(ok, T), Expected, Until);
        {outcome, {ok, credit_limit}} ->
            collect(Running, bump(credit_limit, bump(ok, T)), Expected, Until);
        {outcome, {fail, What}} ->
            collect(Running, report(What, bump(failed, T)), Expected, Until);
        worker_done ->
            collect(Running - 1, T, Expected, Until)
    after Left ->
            Ok = maps:get(ok, T),
            Unfinished = Expected - Ok - maps:get(failed, T),
            io:format("FAIL deadline: ~b requests unfinished after the overall deadline~n",
                      [Unfinished]),
            note_credit_limit(T),
            {Ok, Expected - Ok}
    end.

bump(K, T) -> maps:update_with(K, fun(V) -> V + 1 end, T).

report(What, #{lines := L} = T) when L < ?MAX_FAIL_LINES ->
    io:format("FAIL ~s~n", [What]),
    T#{lines := L + 1};
report(_, T) -> T.

note_credit_limit(#{credit_limit := 0}) -> ok;
note_credit_limit(#{credit_limit := K}) ->
    io:format("NOTE ~b answers carried 4012 (DIAMETER_CREDIT_LIMIT_REACHED)~n", [K]).

worker(#opts{sessions = N} = O, Next, Collector) ->
    case atomics:add_get(Next, 1, 1) of
        I when I =< N ->
            Outcomes = try run_one(O#opts.mode, O#opts.realm, I)
                       catch C:R:S ->
                               Why = io_lib:format("session ~b crashed ~0p:~0p ~0p", [I, C, R, S]),
                               lists:duplicate(steps(O#opts.mode), {fail, Why})
                       end,
            [Collector ! {outcome, Out} || Out <- Outcomes],
            worker(O, Next, Collector);
        _ ->
            Collector ! worker_done
    end.

%% ------------------------------------------------------------------ one session / event

%% <DiameterIdentity>;<high 32 bits>;<low 32 bits>[;<optional>] (RFC 6733 8.8): the run's
%% start time and the session number, then the OS process id, so that runs started in the
%% same second against the same server do not reuse Session-Ids.
session_id(I) ->
    Start = persistent_term:get({?MODULE, start_us}),
    iolist_to_binary(io_lib:format("~s;~b;~b;~s",
                                   [?ORIGIN_HOST, Start bsr 32, (Start + I) band 16#ffffffff,
                                    os:getpid()])).

%% The subscriber for session I: spread over the dataset (and so over its companies).
msisdn(I) ->
    iolist_to_binary(io_lib:format("4917~8..0b", [(I * 7919) rem ?MSISDNS])).

subscription(I) ->
    [#{'Subscription-Id-Type' => 0,   % END_USER_E164
       'Subscription-Id-Data' => msisdn(I)}].

run_one(event, Realm, I) ->
    Sid = session_id(I),
    Req = #{'Session-Id' => Sid,
            'Origin-Host' => ?ORIGIN_HOST,
            'Origin-Realm' => ?ORIGIN_REALM,
            'Destination-Realm' => Realm,
            'Auth-Application-Id' => ?CC_APP_ID,
            'Service-Context-Id' => <<"32274@3gpp.org">>,
            'CC-Request-Type' => ?EVENT,
            'CC-Request-Number' => 0,
            'Event-Timestamp' => [calendar:universal_time()],
            'Subscription-Id' => subscription(I),
            'Requested-Action' => [0],   % DIRECT_DEBITING
            'Service-Identifier' => [1],
            'Requested-Service-Unit' => [#{'CC-Service-Specific-Units' => [1]}]},
    {Outcome, _} = exchange(I, Req),
    [Outcome];
run_one(session, Realm, I) ->
    Sid = session_id(I),
    Common = #{'Session-Id' => Sid,
               'Origin-Host' => ?ORIGIN_HOST,
               'Origin-Realm' => ?ORIGIN_REALM,
               'Destination-Realm' => Realm,
               'Auth-Application-Id' => ?CC_APP_ID,
               'Service-Context-Id' => <<"32251@3gpp.org">>,
               'Subscription-Id' => subscription(I),
               'Multiple-Services-Indicator' => [1]},   % MULTIPLE_SERVICES_SUPPORTED
    Rsu = #{'CC-Total-Octets' => [1000000]},
    Usu = #{'CC-Total-Octets' => [400000 + I rem 1000]},
    Initial = Common#{'CC-Request-Type' => ?INITIAL,
                      'CC-Request-Number' => 0,
                      'Multiple-Services-Credit-Control' =>
                          [#{'Rating-Group' => [?RATING_GROUP],
                             'Requested-Service-Unit' => [Rsu]}]},
    case exchange(I, Initial) of
        {Out1, #{'Result-Code' := ?SUCCESS, 'Origin-Host' := Ocs}} ->
            %% later requests of the session go to the host that opened it (RFC 4006 5.2)
            Later = Common#{'Destination-Host' => [Ocs]},
            Update = Later#{'CC-Request-Type' => ?UPDATE,
                            'CC-Request-Number' => 1,
                            'Multiple-Services-Credit-Control' =>
                                [#{'Rating-Group' => [?RATING_GROUP],
                                   'Requested-Service-Unit' => [Rsu],
                                   'Used-Service-Unit' => [Usu]}]},
            {Out2, _} = exchange(I, Update),
            Terminate = Later#{'CC-Request-Type' => ?TERMINATION,
                               'CC-Request-Number' => 2,
                               'Termination-Cause' => [1],   % DIAMETER_LOGOUT
                               'Multiple-Services-Credit-Control' =>
                                   [#{'Rating-Group' => [?RATING_GROUP],
                                      'Used-Service-Unit' => [Usu]}]},
            {Out3, _} = exchange(I, Terminate),
            [Out1, Out2, Out3];
        {Out1, _} ->
            Skip = {fail, io_lib:format("session ~b ~s: not sent, CCR-I did not succeed",
                                        [I, Sid])},
            [Out1, Skip, Skip]
    end.

%% Sends one CCR and checks its CCA. Returns the outcome for the tally and the decoded
%% answer (or none).
exchange(I, Req) ->
    Label = label(I, Req),
    case diameter:call(?SERVICE, ?APP, ['CCR' | Req], [{timeout, ?REQUEST_TIMEOUT_MS}]) of
        {answer, ['CCA' | Ans], []} ->
            case check(Req, Ans) of
                [] ->
                    {success(Req, Ans), Ans};
                Problems ->
                    {{fail, io_lib:format("~s: ~0p; answer ~0p", [Label, Problems, Ans])}, Ans}
            end;
        {answer, ['CCA' | Ans], Errors} ->
            {{fail, io_lib:format("~s: OTP decode errors ~0p; answer ~0p",
                                  [Label, [error_info(E) || E <- Errors], Ans])}, Ans};
        {answer, Other, Errors} ->
            {{fail, io_lib:format("~s: not a CCA: ~0p, errors ~0p",
                                  [Label, Other, [error_info(E) || E <- Errors]])}, none};
        {error, Reason} ->
            {{fail, io_lib:format("~s: no answer: ~0p", [Label, Reason])}, none};
        Other ->
            {{fail, io_lib:format("~s: ~0p", [Label, Other])}, none}
    end.

label(I, #{'Session-Id' := Sid, 'CC-Request-Type' := T, 'CC-Request-Number' := N}) ->
    Kind = element(T, {"CCR-I", "CCR-U", "CCR-T", "CCR-E"}),
    io_lib:format("~s #~b (session ~b, ~s)", [Kind, N, I, Sid]).

success(#{'CC-Request-Type' := ?EVENT}, #{'Result-Code' := ?CREDIT_LIMIT_REACHED}) ->
    {ok, credit_limit};
success(_, Ans) ->
    Refused = [M || M <- maps:get('Multiple-Services-Credit-Control', Ans, []),
                    maps:get('Result-Code', M, []) == [?CREDIT_LIMIT_REACHED]],
    case Refused of
        [] -> ok;
        _ -> {ok, credit_limit}
    end.

%% What is wrong with a decoded CCA for the request; [] when nothing.
check(#{'CC-Request-Type' := Type} = Req, Ans) ->
    Echo = [{K, maps:get(K, Req), maps:get(K, Ans, missing)}
            || K <- ['Session-Id', 'CC-Request-Type', 'CC-Request-Number',
                     'Auth-Application-Id']],
    Codes = case Type of
                ?EVENT -> [?SUCCESS, ?CREDIT_LIMIT_REACHED];
                _ -> [?SUCCESS]
            end,
    Rc = maps:get('Result-Code', Ans, missing),
    [{'Result-Code', Rc} || not lists:member(Rc, Codes)]
        ++ [{K, {sent, S}, {got, G}} || {K, S, G} <- Echo, S /= G]
        ++ check_mscc(Type, Rc, Ans).

check_mscc(?EVENT, Rc, Ans) ->
    check_event_grant(Rc, Ans);
check_mscc(_, Rc, _) when Rc /= ?SUCCESS -> [];
check_mscc(Type, _, Ans) ->
    Msccs = maps:get('Multiple-Services-Credit-Control', Ans, []),
    case [M || M <- Msccs, maps:get('Rating-Group', M, []) == [?RATING_GROUP]] of
        [M] -> check_grant(Type, M);
        [] -> [{'Multiple-Services-Credit-Control', no_rating_group_10, Msccs}];
        Many -> [{'Multiple-Services-Credit-Control', repeated_rating_group_10, Many}]
    end.

check_grant(Type, M) ->
    case maps:get('Result-Code', M, []) of
        [?SUCCESS] when Type == ?TERMINATION -> [];
        [?SUCCESS] ->
            case maps:get('Granted-Service-Unit', M, []) of
                [#{'CC-Total-Octets' := [_]}] -> [];
                Gsu -> [{'MSCC Granted-Service-Unit', Gsu}]
            end;
        [?CREDIT_LIMIT_REACHED] -> [];
        [] when Type == ?TERMINATION -> [];   % the MSCC Result-Code is optional
        Rc -> [{'MSCC Result-Code', Rc}]
    end.

%% Direct debiting (RFC 4006 6.3): "The credit-control server returns the
%% Granted-Service-Unit AVP in the Credit-Control-Answer", here at the top level or in an
%% MSCC; an MSCC in the answer carries a Result-Code like any other (RFC 6733 7.1: 1xxx to
%% 5xxx), here 2001 or 4012.
check_event_grant(Rc, Ans) ->
    Msccs = maps:get('Multiple-Services-Credit-Control', Ans, []),
    BadCodes = [{'MSCC Result-Code', C, M}
                || M <- Msccs,
                   C <- [maps:get('Result-Code', M, [])],
                   not lists:member(C, [[?SUCCESS], [?CREDIT_LIMIT_REACHED]])],
    Grants = maps:get('Granted-Service-Unit', Ans, [])
        ++ lists:append([maps:get('Granted-Service-Unit', M, []) || M <- Msccs]),
    Units = [G || #{'CC-Service-Specific-Units' := [_]} = G <- Grants],
    NoGrant = case Rc == ?SUCCESS andalso Units == [] of
                  true -> [{'Granted-Service-Unit', missing_for_direct_debiting}];
                  false -> []
              end,
    BadCodes ++ NoGrant.

%% A decode error as OTP reported it: {ResultCode, AVP} or ResultCode alone, the AVP
%% shown by code, vendor, flags, name and raw data.
error_info({Rc, #diameter_avp{} = A}) -> {Rc, avp_info(A)};
error_info(E) -> E.

avp_info(#diameter_avp{code = C, vendor_id = V, is_mandatory = M, need_encryption = P,
                       name = N, data = D}) ->
    #{code => C, vendor_id => V, m_bit => M, p_bit => P, name => N, data => D}.

%% ------------------------------------------------------------------ the stub server

-define(SERVER, gyro_gy_server).
-define(STUB_HOST, <<"stub.otp.gyro.test">>).
-define(VENDOR_3GPP, 10415).
-define(PEERS, gyro_gy_server_peers).   % peer_fsm pids of the connections the service has up
-define(GATE_WAIT_MS, 2000).

%% `-run gyro_gy server PORT [strict|lenient]`: never returns; halts with 1 when it cannot
%% listen.
server(Args) ->
    {Port, Mode} = case Args of
                       [P] -> {list_to_integer(P), strict};
                       [P, M] when M == "strict"; M == "lenient" ->
                           {list_to_integer(P), list_to_atom(M)};
                       _ ->
                           io:format("FAIL usage: server PORT [strict|lenient], got ~0p~n",
                                     [Args]),
                           erlang:halt(2)
                   end,
    persistent_term:put({?MODULE, mode}, Mode),
    %% owned by this process, which lives as long as the server
    ?PEERS = ets:new(?PEERS, [named_table, public, set, {read_concurrency, true}]),
    ok = diameter:start(),
    ok = diameter:start_service(?SERVER, server_options(Mode)),
    {ok, Ref} = diameter:add_transport(?SERVER, {listen,
        [{transport_module, diameter_tcp},
         {transport_config, [{ip, {127, 0, 0, 1}}, {port, Port}, {reuseaddr, true},
                             {nodelay, true}, {backlog, 128},
                             {message_cb, {?MODULE, message_gate, []}}]}]}),
    case listening_port(Ref, 50) of
        {ok, Bound} ->
            io:format("LISTENING ~b~n", [Bound]);
        error ->
            io:format("FAIL cannot listen on 127.0.0.1:~b~n", [Port]),
            erlang:halt(1)
    end,
    receive after infinity -> ok end.

server_options(Mode) ->
    [{'Origin-Host', ?STUB_HOST},
     {'Origin-Realm', ?ORIGIN_REALM},
     {'Vendor-Id', 0},
     {'Product-Name', "gyro_gy stub server (OTP diameter)"},
     {'Supported-Vendor-Id', [?VENDOR_3GPP]},
     {'Auth-Application-Id', [?CC_APP_ID]},
     {'Vendor-Specific-Application-Id',
      [[{'Vendor-Id', ?VENDOR_3GPP}, {'Auth-Application-Id', [?CC_APP_ID]}]]},
     {decode_format, map},
     {string_decode, false},
     {strict_mbit, Mode == strict},
     %% a load generator opens several connections with one Origin-Host (the default,
     %% `nodes`, would refuse all but the first)
     {restrict_connections, false},
     {traffic_counters, false},
     %% CCRs are small: refuse anything over 64 KiB rather than buffer it
     {incoming_maxlen, 65535},
     %% each request is decoded, answered and encoded in one short-lived process: a heap
     %% that holds all of it spares that process its garbage collections
     {spawn_opt, [{min_heap_size, 4096}]},
     {application, [{alias, ?APP},
                    {dictionary, rfc4006_cc},
                    {module, ?MODULE},
                    %% 3xxx answered by OTP; 5xxx decode errors reach handle_request/3
                    {request_errors, answer_3xxx}]}].

%% The listening socket's port. The listener starts asynchronously: wait for it a little.
%% diameter_tcp:ports/1 (exported, used by OTP's own test suites) lists a transport's sockets.
listening_port(_Ref, 0) -> error;
listening_port(Ref, Tries) ->
    case [P || {listen, P, _Pid} <- diameter_tcp:ports(Ref)] of
        [P | _] -> {ok, P};
        [] -> timer:sleep(100), listening_port(Ref, Tries - 1)
    end.

%% OTP's diameter has a race on the accepting side: the peer_fsm sends the CEA, then tells
%% its watchdog, which tells the service process, which adds the connection to its peer
%% table; the watchdog meanwhile hands incoming requests to diameter_traffic, which
%% silently discards those arriving before that insert (find_incoming_app/4 finds no
%% peer). A client that sends at once on the CEA (gyro's load generator does, a whole window
%% of CCRs) then loses them when the service process is slow to run (a loaded machine): they
%% never get an answer. So the transport holds the (successful) CEA back until the service
%% has called peer_up/3 for the connection, which it does after the insert; then the
%% callback removes itself. (With a message_cb configured, diameter_tcp also asks the
%% peer_fsm to acknowledge requests, a monitor per request: cheap next to the codec.)
message_gate(send, Msg) ->
    Bin = case Msg of #diameter_packet{bin = B} -> B; B -> B end,
    case Bin of
        <<_:32, 0:1, _:7, 257:24, _/binary>> ->   % CEA
            result_code(Bin) == ?SUCCESS andalso await_peer_up(?GATE_WAIT_MS),
            [Msg | false];   % send it, and no callback from now on
        _ ->
            [Msg]
    end;
message_gate(recv, Msg) -> [Msg];
message_gate(ack, _) -> [].

%% The transport process monitors its parent, the peer_fsm, whose pid the service passes
%% to peer_up/3.
await_peer_up(0) ->
    io:format(standard_error, "WARN CEA sent before the service registered the peer~n", []);
await_peer_up(Ms) ->
    {monitors, Monitored} = erlang:process_info(self(), monitors),
    case [P || {process, P} <- Monitored, ets:member(?PEERS, P)] of
        [_ | _] -> true;
        [] -> receive after 1 -> await_peer_up(Ms - 1) end
    end.

%% The top-level Result-Code of an encoded answer, 0 when it has none.
result_code(<<_:20/binary, Avps/binary>>) -> result_code_avp(Avps);
result_code(_) -> 0.

result_code_avp(<<268:32, 0:1, _:7, 12:24, Rc:32, _/binary>>) -> Rc;
result_code_avp(<<_:32, _:8, Len:24, _/binary>> = Avps) when Len >= 8 ->
    Padded = (Len + 3) band (bnot 3),
    case Avps of
        <<_:Padded/binary, Rest/binary>> -> result_code_avp(Rest);
        _ -> 0
    end;
result_code_avp(_) -> 0.

%% The CCA for a CCR; errors as OTP's decode found them.
answer_ccr(Req, Errors) ->
    Type = maps:get('CC-Request-Type', Req, ?INITIAL),
    Base = #{'Session-Id' => maps:get('Session-Id', Req, <<>>),
             'Origin-Host' => ?STUB_HOST,
             'Origin-Realm' => ?ORIGIN_REALM,
             'Auth-Application-Id' => ?CC_APP_ID,
             'CC-Request-Type' => Type,
             'CC-Request-Number' => maps:get('CC-Request-Number', Req, 0)},
    case remaining_errors(Errors) of
        [] ->
            Ans = grant_top(Req, Base#{'Result-Code' => ?SUCCESS,
                                       'Multiple-Services-Credit-Control' =>
                                           [grant_mscc(M) || M <- maps:get(
                                               'Multiple-Services-Credit-Control', Req, [])]}),
            case Errors of
                [] -> {reply, ['CCA' | Ans]};
                %% tolerated errors: `false` keeps OTP from setting Result-Code/Failed-AVP
                _ -> {reply, #diameter_packet{msg = ['CCA' | Ans], errors = false}}
            end;
        Left ->
            %% no Result-Code: OTP sets it and Failed-AVP from the first error
            {reply, #diameter_packet{msg = ['CCA' | Base], errors = Left}}
    end.

%% A top-level Requested-Service-Unit (an event) is granted as asked.
grant_top(#{'Requested-Service-Unit' := [Rsu]}, Ans) ->
    Ans#{'Granted-Service-Unit' => [units(Rsu)]};
grant_top(_, Ans) -> Ans.

grant_mscc(M) ->
    G = #{'Rating-Group' => maps:get('Rating-Group', M, []),
          'Service-Identifier' => maps:get('Service-Identifier', M, []),
          'Result-Code' => [?SUCCESS]},
    case M of
        #{'Requested-Service-Unit' := [Rsu]} -> G#{'Granted-Service-Unit' => [units(Rsu)]};
        _ -> G
    end.

%% Requested-Service-Unit and Granted-Service-Unit share their unit AVPs; AVPs the
%% dictionary does not know are not echoed.
units(Rsu) -> maps:remove('AVP', Rsu).

%% The decode errors that still count: none in lenient mode for unknown vendor-specific
%% AVPs (reported with the group that holds them, down to the AVP itself).
remaining_errors([]) -> [];
remaining_errors(Errors) ->
    case persistent_term:get({?MODULE, mode}) of
        strict -> Errors;
        lenient -> [E || E <- Errors, not unknown_vendor_avp(E)]
    end.

unknown_vendor_avp({Rc, #diameter_avp{} = A}) when Rc == 5001; Rc == 5008 ->
    case innermost(A) of
        #diameter_avp{name = undefined, vendor_id = V} -> is_integer(V) andalso V /= 0;
        _ -> false
    end;
unknown_vendor_avp(_) -> false.

innermost(#diameter_avp{data = [#diameter_avp{} = Inner]}) -> innermost(Inner);
innermost(A) -> A.

%% ------------------------------------------------------------------ diameter_app callbacks

%% The server notes its connections for message_gate/2 (the service calls peer_up/3 after
%% adding the connection to its peer table).
peer_up(?SERVER, {TPid, _Caps}, State) ->
    ets:insert(?PEERS, {TPid}),
    State;
peer_up(_Svc, _Peer, State) -> State.

peer_down(?SERVER, {TPid, _Caps}, State) ->
    ets:delete(?PEERS, TPid),
    State;
peer_down(_Svc, _Peer, State) -> State.

pick_peer([Peer | _], _Remote, _Svc, _State) -> {ok, Peer};
pick_peer([], [Peer | _], _Svc, _State) -> {ok, Peer};
pick_peer([], [], _Svc, _State) -> false.

prepare_request(Pkt, _Svc, _Peer) -> {send, Pkt}.
prepare_retransmit(Pkt, _Svc, _Peer) -> {send, Pkt}.

%% With answer_errors = callback, OTP's decode errors arrive here in `errors`.
handle_answer(#diameter_packet{msg = Msg, errors = Errors}, _Req, _Svc, _Peer) ->
    {answer, Msg, Errors}.

handle_error(Reason, _Req, _Svc, _Peer) -> {error, Reason}.

%% The server answers CCRs (their decode errors in `errors`, request_errors answer_3xxx).
handle_request(#diameter_packet{msg = ['CCR' | Req], errors = Errors}, ?SERVER, _Peer) ->
    answer_ccr(Req, Errors);
%% A client: any request from gyro other than the ones OTP handles itself (DWR, DPR) is
%% not ours to serve; nor is anything but a CCR the server's.
handle_request(_Pkt, _Svc, _Peer) -> {answer_message, 3001}.   % DIAMETER_COMMAND_UNSUPPORTED
