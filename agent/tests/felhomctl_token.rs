//! `felhomctl token …` and `felhomctl pins` against an agent without Proxmox VE and without the
//! local API gateway: the errors an operator sees. (Minting, rotating and revoking with a
//! running gateway are covered end to end in felhom-simhost's `localapi_e2e` tests, which use
//! the same `felhom_agent::ctl::token::run`.)

mod common;

use common::Agent;

#[test]
fn pins_without_the_gateway_says_how_to_turn_it_on() {
    Agent::start()
        .ctl(&["pins"])
        .fails_with(
            4,
            "felhomctl: FAILED_PRECONDITION: the local API gateway is off (set [local_api] listen in the agent config)\n",
        );
}

#[test]
fn revoking_a_guest_without_a_token_prints_no_token_and_exits_1() {
    let run = Agent::start()
        .ctl(&["token", "revoke", "--vmid", "101"])
        .exits(1);
    assert_eq!(run.stdout, "no token\n");
    assert_eq!(run.stderr, "");
}

#[test]
fn rotating_a_guest_without_a_token_is_not_found() {
    let run = Agent::start()
        .ctl(&["token", "rotate", "--vmid", "101"])
        .exits(4);
    assert!(run.stderr.starts_with("felhomctl: NOT_FOUND: "), "{run:?}");
    assert_eq!(run.stdout, "");
}

#[test]
fn token_needs_a_valid_vmid() {
    let agent = Agent::start();
    let run = agent.ctl(&["token", "mint", "--vmid", "7"]).exits(2);
    assert!(run.stderr.contains("--vmid"), "{run:?}");
    let run = agent.ctl(&["token", "mint"]).exits(2);
    assert!(run.stderr.contains("--vmid <N>"), "{run:?}");
}
