"""RFC 9420 (MLS) ratchet trees: wire format, tree math, hashes, validation, operations.

Pure Python without I/O, for the group state the cache holds:

- `codec` — the TLS presentation language of §2.1 (strict varint vectors, optionals);
- `structs`, `proposals` — LeafNode, ParentNode, Credential, KeyPackage, Add/Update/Remove;
- `tree_math` — array-based tree arithmetic (Appendix C);
- `RatchetTree` — the `ratchet_tree` extension (§12.4.3.3), resolutions (§4.1);
- `hashes` — tree hashes (§7.8) and parent hashes (§7.9);
- `validation` — parent-hash chains (§7.9.2) and leaf signatures (§7.2, §5.1.2);
- `operations` — extend/truncate (§7.7) and applying proposals (§12.1.1-§12.1.3);
- `suites` — cipher suites 1-7 (§17.1) over `cryptography`;
- `stats`, `synthetic` — shape statistics, valid synthetic trees and groups that evolve;
- `cli` — `statecache mls tree-info`.

Errors: `MlsError` and its leaves (see `errors`).
"""

from . import tree_math
from .errors import MlsDecodeError, MlsError, MlsTreeError, UnsupportedCipherSuite
from .hashes import original_sibling_tree_hash, parent_hash, tree_hash, tree_hashes
from .operations import (
    add_leaf,
    apply_proposal,
    apply_proposals,
    extend,
    remove_leaf,
    truncate,
    update_leaf,
)
from .proposals import (
    Add,
    KeyPackage,
    Proposal,
    ProposalType,
    Remove,
    Update,
    decode_proposal,
    encode_proposal,
)
from .stats import TreeStats, tree_stats
from .structs import (
    Capabilities,
    Credential,
    CredentialType,
    Extension,
    HPKEPublicKey,
    LeafNode,
    LeafNodeSource,
    Lifetime,
    Node,
    NodeType,
    ParentNode,
    SignaturePublicKey,
    decode_node,
    encode_node,
)
from .suites import CIPHER_SUITES, CipherSuite, SigningKey, cipher_suite
from .synthetic import SYNTHETIC_GROUP_ID, SyntheticGroup, synthetic_tree
from .tree import RatchetTree
from .validation import (
    LEAF_NODE_LABEL,
    parent_hash_failures,
    signature_failures,
    verify_leaf_signature,
    verify_leaf_signatures,
    verify_parent_hashes,
)

__all__ = [
    "CIPHER_SUITES",
    "LEAF_NODE_LABEL",
    "SYNTHETIC_GROUP_ID",
    "Add",
    "Capabilities",
    "CipherSuite",
    "Credential",
    "CredentialType",
    "Extension",
    "HPKEPublicKey",
    "KeyPackage",
    "LeafNode",
    "LeafNodeSource",
    "Lifetime",
    "MlsDecodeError",
    "MlsError",
    "MlsTreeError",
    "Node",
    "NodeType",
    "ParentNode",
    "Proposal",
    "ProposalType",
    "RatchetTree",
    "Remove",
    "SignaturePublicKey",
    "SigningKey",
    "SyntheticGroup",
    "TreeStats",
    "UnsupportedCipherSuite",
    "Update",
    "add_leaf",
    "apply_proposal",
    "apply_proposals",
    "cipher_suite",
    "decode_node",
    "decode_proposal",
    "encode_node",
    "encode_proposal",
    "extend",
    "original_sibling_tree_hash",
    "parent_hash",
    "parent_hash_failures",
    "remove_leaf",
    "signature_failures",
    "synthetic_tree",
    "tree_hash",
    "tree_hashes",
    "tree_math",
    "tree_stats",
    "truncate",
    "update_leaf",
    "verify_leaf_signature",
    "verify_leaf_signatures",
    "verify_parent_hashes",
]
