%% gyro_otp: drives Erlang/OTP's diameter application (an independent, strict RFC 6733
%% stack) against gyro's peer state machine, for the interop tests in ../otp_interop.rs.
%%
%%   client Port TwMs HoldMs : connect to gyro on 127.0.0.1:Port with OTP's watchdog at
%%       TwMs, stay up HoldMs (OTP sends DWRs), then remove the transport (OTP sends
%%       DPR). Prints UP, WATCHDOG transitions, STATS and DOWN with its delay.
%%   server Port : listen on 127.0.0.1:Port as ocs.erl.test and print each peer event.
%%
%% Both advertise the Diameter Credit-Control application (4) with OTP's RFC 4006
%% dictionary, compiled beside this file by the test.
-module(gyro_otp).

-include_lib("diameter/include/diameter.hrl").

-export([client/1, server/1, tw/1]).
-export([peer_up/3, peer_down/3, pick_peer/4, prepare_request/3,
         prepare_retransmit/3, handle_answer/4, handle_error/4,
         handle_request/3]).

svc(Host) ->
    [{'Origin-Host', Host},
     {'Origin-Realm', "erl.test"},
     {'Vendor-Id', 0},
     {'Product-Name', "gyro interop (OTP diameter)"},
     {'Auth-Application-Id', [4]},
     {'Supported-Vendor-Id', [10415]},
     {decode_format, map},
     {strict_mbit, true},
     {application, [{alias, cc}, {dictionary, rfc4006_cc}, {module, ?MODULE}]}].

%% OTP requires Tw >= 6000 ms when given as an integer; a function may return less,
%% which keeps the test short.
tw(Ms) -> Ms.

client([Port, TwMs, HoldMs]) ->
    ok = diameter:start(),
    ok = diameter:start_service(ctf, svc("ctf.erl.test")),
    true = diameter:subscribe(ctf),
    Tw = list_to_integer(TwMs),
    {ok, _} = diameter:add_transport(ctf, {connect,
        [{transport_module, diameter_tcp},
         {transport_config, [{raddr, {127,0,0,1}}, {rport, list_to_integer(Port)}]},
         {watchdog_timer, {?MODULE, tw, [Tw]}},
         {dpa_timeout, 3000},
         {connect_timer, 30000}]}),
    receive
        #diameter_event{info = {up, _, {_, Caps}, _, _}} -> up(Caps);
        #diameter_event{info = {up, _, {_, Caps}, _}} -> up(Caps);
        #diameter_event{info = Info} when element(1, Info) == closed ->
            io:format("CLOSED ~p~n", [Info]), halt(1)
    after 10000 -> io:format("NO CONNECTION~n"), halt(1)
    end,
    T = erlang:monotonic_time(millisecond) + list_to_integer(HoldMs),
    events(T),
    io:format("STATS ~p~n", [stats()]),
    %% OTP sends DPR and waits up to dpa_timeout (3 s) for the DPA: a DOWN well before
    %% that means it took gyro's DPA.
    T0 = erlang:monotonic_time(millisecond),
    ok = diameter:remove_transport(ctf, true),
    receive #diameter_event{info = {down, _, _, _}} ->
        io:format("DOWN after ~p ms~n", [erlang:monotonic_time(millisecond) - T0])
    after 5000 -> io:format("NO DOWN~n")
    end,
    halt(0).

up(Caps) ->
    #diameter_caps{origin_host = {_, PH}, product_name = {_, Prod}} = Caps,
    io:format("UP ~s ~s~n", [PH, Prod]).

events(Until) ->
    Left = Until - erlang:monotonic_time(millisecond),
    if Left =< 0 -> ok;
       true ->
           receive
               #diameter_event{info = {watchdog, _, _, {From, To}, _}} ->
                   io:format("WATCHDOG ~p ~p~n", [From, To]), events(Until);
               #diameter_event{info = Info} ->
                   io:format("EVENT ~p~n", [element(1, Info)]), events(Until)
           after Left -> ok
           end
    end.

%% Counters of messages by {{Application, Command, RBit}, Direction[, Result-Code]}.
stats() ->
    case diameter:service_info(ctf, statistics) of
        L when is_list(L) -> L;
        Other -> Other
    end.

server([Port]) ->
    ok = diameter:start(),
    ok = diameter:start_service(ocs, svc("ocs.erl.test")),
    true = diameter:subscribe(ocs),
    {ok, _} = diameter:add_transport(ocs, {listen,
        [{transport_module, diameter_tcp},
         {transport_config, [{reuseaddr, true}, {ip, {127,0,0,1}}, {port, list_to_integer(Port)}]}]}),
    io:format("LISTENING~n"),
    serve().

serve() ->
    receive
        #diameter_event{info = {watchdog, _, _, {From, To}, _}} ->
            io:format("WATCHDOG ~p ~p~n", [From, To]);
        #diameter_event{info = Info} ->
            io:format("EVENT ~p~n", [element(1, Info)])
    end,
    serve().

%% diameter_app callbacks: gyro's tests exchange no application messages here.
peer_up(_, _, S) -> S.
peer_down(_, _, S) -> S.
pick_peer([P | _], _, _, S) -> {ok, P, S}.
prepare_request(P, _, _) -> {send, P}.
prepare_retransmit(P, _, _) -> {send, P}.
handle_answer(#diameter_packet{msg = M}, _, _, _) -> {ok, M}.
handle_error(R, _, _, _) -> {error, R}.
handle_request(_, _, _) -> {answer_message, 3001}.
