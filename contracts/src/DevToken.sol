// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title openpod development token
/// @notice An ERC-20 with EIP-2612 permit for development and tests. Its faucet mints only on
///         development chains (chain ids 31337 and 1337); in production any ERC-20 is
///         configured instead and this contract is never deployed.
contract DevToken is ERC20, ERC20Permit {
    /// @notice The most one faucet call mints, in base units.
    uint256 public constant FAUCET_LIMIT = 1_000_000_000 ether;

    /// @notice The faucet was called on a chain that is not a development chain.
    error FaucetDisabled(uint256 chainId);
    /// @notice The faucet was asked for more than `FAUCET_LIMIT` at once.
    error FaucetLimitExceeded(uint256 requested, uint256 limit);

    constructor() ERC20("openpod Dev USD", "oUSD") ERC20Permit("openpod Dev USD") {}

    /// @notice Mint `amount` base units to `to`, on development chains only.
    /// @param to Who receives the tokens.
    /// @param amount Base units to mint, at most `FAUCET_LIMIT`.
    function faucet(address to, uint256 amount) external {
        if (block.chainid != 31337 && block.chainid != 1337) revert FaucetDisabled(block.chainid);
        if (amount > FAUCET_LIMIT) revert FaucetLimitExceeded(amount, FAUCET_LIMIT);
        _mint(to, amount);
    }
}
