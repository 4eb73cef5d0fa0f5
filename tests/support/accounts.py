"""The local Hub's accounts: every test's tokens, in one place."""

ALICE = "hf_alice_write_0123456789"
ALICE_LAPTOP = "hf_alice_laptop_9876543210"  # another client of alice's that commits to the same repo mid-run
ALICE_READ = "hf_alice_read_0123456789"
BOB = "hf_bob_write_0123456789"
SECRET = "hf_TheWorldTestSecret_5f0c2a9d7e41"  # alice's too; distinctive: grepped for in every written file

TOKENS = {
    ALICE: {"user": "alice", "role": "write"},
    ALICE_LAPTOP: {"user": "alice", "role": "write"},
    ALICE_READ: {"user": "alice", "role": "read"},
    BOB: {"user": "bob", "role": "write"},
    SECRET: {"user": "alice", "role": "write"},
}
