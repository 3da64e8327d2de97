// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

/// @title openpod payments
/// @notice Settles metered GPU time as token payments from a user's wallet to a provider's.
///         The amount is computed here, from the rate table, so every charge can be checked
///         from the `Paid` events alone: amount = durationSeconds * gpuCount * rate, and the
///         platform fee = amount * feeBps / 10_000 (rounded down) goes to the treasury.
/// @dev The operator (the platform's hot wallet) can bill a user only within what the user
///      agreed to: a lease the user signed (EIP-712) for one run of one pod, which bounds the
///      seconds by wall-clock time since its start and the rate by its maximum, and a
///      spending cap the user sets. A stolen operator key cannot drain a user past those.
contract OpenPodPayments is AccessControl, Pausable, EIP712 {
    using SafeERC20 for IERC20;

    /// @notice The hot wallet: submits payments and opens and closes leases.
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    /// @notice May set GPU rates.
    bytes32 public constant RATE_ADMIN_ROLE = keccak256("RATE_ADMIN_ROLE");
    /// @notice May pause payments (unpausing needs the admin).
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");

    /// @notice The highest platform fee the admin can ever set: 20 %.
    uint16 public constant MAX_FEE_BPS = 2_000;
    uint256 private constant BPS = 10_000;

    /// @notice EIP-712 type of the lease a user signs before a run of a pod can be billed.
    bytes32 public constant LEASE_TYPEHASH = keccak256(
        "Lease(bytes32 pod,uint32 generation,address user,address provider,bytes32 gpuType,"
        "uint16 gpuCount,uint256 maxRate,uint64 start)"
    );

    /// @notice What a user signs: one run (`generation`) of one pod on one provider.
    struct LeaseTerms {
        bytes32 pod;
        uint32 generation;
        address user;
        address provider;
        bytes32 gpuType;
        uint16 gpuCount;
        uint256 maxRate;
        uint64 start;
    }

    /// @notice A lease as stored; `end` is 0 while the run is open.
    struct Lease {
        address user;
        uint40 start;
        uint40 end;
        uint16 gpuCount;
        address provider;
        uint40 billedSeconds;
        bytes32 gpuType;
        uint256 maxRate;
    }

    /// @notice One settlement in a batch; the fields of `payment`.
    struct Charge {
        uint256 settlementId;
        bytes32 lease;
        address user;
        address provider;
        uint256 durationSeconds;
        bytes32 gpuType;
        uint256 gpuCount;
    }

    /// @notice A user's spending cap and what the operator has charged so far.
    struct Budget {
        uint128 cap;
        uint128 spent;
    }

    /// @notice The token payments move in (any ERC-20).
    IERC20 public immutable token;
    /// @notice Where platform fees go.
    address public treasury;
    /// @notice The platform fee in basis points of each amount.
    uint16 public feeBps;

    /// @notice Base units per GPU per second, by GPU type; 0 means unknown.
    mapping(bytes32 gpuType => uint256 rate) public rates;
    /// @notice Spending cap and spent, by user.
    mapping(address user => Budget) public budgets;
    mapping(bytes32 leaseId => Lease) private _leases;
    // Paid settlement ids as a bitmap: 256 ids per word, so dense ids share storage slots.
    mapping(uint256 word => uint256 bits) private _paid;

    /// @notice A settlement was paid: `amount` left the user, `amount - fee` reached the provider.
    event Paid(
        uint256 indexed settlementId,
        address indexed user,
        address indexed provider,
        bytes32 lease,
        bytes32 gpuType,
        uint256 gpuCount,
        uint256 durationSeconds,
        uint256 rate,
        uint256 amount,
        uint256 fee
    );
    /// @notice A settlement in a batch was not paid; `reason` is the custom error's revert data.
    event PaymentRejected(uint256 indexed settlementId, bytes reason);
    /// @notice A GPU type's rate changed (0: removed).
    event RateSet(bytes32 indexed gpuType, uint256 oldRate, uint256 newRate);
    /// @notice The platform fee changed.
    event FeeSet(uint16 oldBps, uint16 newBps);
    /// @notice The treasury changed.
    event TreasurySet(address indexed oldTreasury, address indexed newTreasury);
    /// @notice Payments were paused by a guardian.
    event PaymentsPaused(address indexed guardian);
    /// @notice Payments were resumed by an admin.
    event PaymentsResumed(address indexed admin);
    /// @notice A user's lease for one run of a pod was opened.
    event LeaseOpened(
        bytes32 indexed lease,
        address indexed user,
        address indexed provider,
        bytes32 pod,
        uint32 generation,
        bytes32 gpuType,
        uint16 gpuCount,
        uint256 maxRate,
        uint64 start
    );
    /// @notice A lease was closed: no seconds past `end` can be billed.
    event LeaseClosed(bytes32 indexed lease, address indexed by, uint64 end);
    /// @notice A user set their spending cap.
    event SpendingCapSet(address indexed user, uint256 cap, uint256 spent);

    /// @notice An address that must be set was zero; `field` names it.
    error ZeroAddress(string field);
    /// @notice The GPU type has no rate.
    error UnknownGpuType(bytes32 gpuType);
    /// @notice A settlement of zero seconds.
    error ZeroSeconds(uint256 settlementId);
    /// @notice A GPU count of zero.
    error ZeroGpuCount();
    /// @notice The settlement id was paid before.
    error AlreadyPaid(uint256 settlementId);
    /// @notice No lease with this id.
    error UnknownLease(bytes32 lease);
    /// @notice A lease start of 0 or past 2**40 - 1.
    error BadLeaseStart(uint64 start);
    /// @notice A lease with this id exists already.
    error LeaseExists(bytes32 lease);
    /// @notice The lease was closed before.
    error LeaseAlreadyClosed(bytes32 lease);
    /// @notice A payment's `field` differs from its lease's.
    error LeaseMismatch(bytes32 lease, string field);
    /// @notice Paying would bill `billedSeconds` of a lease that allows `allowedSeconds` so far.
    error LeaseExceeded(bytes32 lease, uint256 billedSeconds, uint256 allowedSeconds);
    /// @notice The GPU type's rate is above the lease's maximum.
    error RateAboveLease(bytes32 lease, uint256 rate, uint256 maxRate);
    /// @notice Paying would take the user's spending to `wouldSpend`, over their `cap`.
    error CapExceeded(address user, uint256 wouldSpend, uint256 cap);
    /// @notice The lease signature is not the user's.
    error BadLeaseSignature(address user);
    /// @notice The caller is neither the lease's user nor an operator.
    error NotLeaseParty(bytes32 lease, address caller);
    /// @notice A fee above `MAX_FEE_BPS`.
    error FeeTooHigh(uint256 bps, uint256 maxBps);
    /// @notice Two lists that go together differ in length.
    error LengthMismatch(uint256 left, uint256 right);
    /// @notice Charge `index` of a batch ran out of gas: the transaction needs a higher limit.
    error BatchOutOfGas(uint256 index);
    /// @notice A batch with no charges.
    error EmptyBatch();
    /// @notice `settleFromBatch` is called by the contract itself only.
    error OnlySelf();

    /// @param token_ The ERC-20 payments move in.
    /// @param admin Holds the admin, rate-admin and guardian roles to start with.
    /// @param treasury_ Receives platform fees.
    /// @param feeBps_ The platform fee in basis points, at most `MAX_FEE_BPS`.
    constructor(IERC20 token_, address admin, address treasury_, uint16 feeBps_)
        EIP712("openpod payments", "1")
    {
        if (address(token_) == address(0)) revert ZeroAddress("token");
        if (admin == address(0)) revert ZeroAddress("admin");
        if (treasury_ == address(0)) revert ZeroAddress("treasury");
        if (feeBps_ > MAX_FEE_BPS) revert FeeTooHigh(feeBps_, MAX_FEE_BPS);
        token = token_;
        treasury = treasury_;
        feeBps = feeBps_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(RATE_ADMIN_ROLE, admin);
        _grantRole(GUARDIAN_ROLE, admin);
    }

    // ---- payments ----------------------------------------------------------------------

    /// @notice Pay one settlement: `durationSeconds` of `gpuCount` GPUs of `gpuType`, from
    ///         `user` to `provider`, under `lease`. Reverts with the custom error that stops it.
    /// @param settlementId The settlement's id; each id is paid at most once.
    /// @param lease The lease id (see `leaseId`) the user signed for this run.
    /// @param user Who pays (must have approved this contract for the token).
    /// @param provider Who is paid, less the platform fee.
    /// @param durationSeconds Seconds of use; never more than the lease's wall-clock time allows.
    /// @param gpuType The GPU type whose rate prices the seconds.
    /// @param gpuCount How many GPUs of that type the run holds.
    function payment(
        uint256 settlementId,
        bytes32 lease,
        address user,
        address provider,
        uint256 durationSeconds,
        bytes32 gpuType,
        uint256 gpuCount
    ) external onlyRole(OPERATOR_ROLE) whenNotPaused {
        _pay(Charge(settlementId, lease, user, provider, durationSeconds, gpuType, gpuCount));
    }

    /// @notice Pay many settlements in one transaction. A charge that cannot be paid does not
    ///         stop the others: it emits `PaymentRejected` with its custom error instead. A
    ///         charge that runs out of gas reverts the whole batch (`BatchOutOfGas`).
    /// @param charges The settlements, each with the fields of `payment`.
    /// @return paid How many were paid.
    function paymentBatch(Charge[] calldata charges)
        external
        onlyRole(OPERATOR_ROLE)
        whenNotPaused
        returns (uint256 paid)
    {
        if (charges.length == 0) revert EmptyBatch();
        for (uint256 i; i < charges.length; ++i) {
            try this.settleFromBatch(charges[i]) {
                ++paid;
            } catch (bytes memory reason) {
                // Every rejection of ours carries a custom error; an empty reason is the call
                // running out of gas (it gets 63/64 of what is left), which must not pass for
                // a rejection: fail the whole batch so that gas estimation finds enough.
                if (reason.length == 0) revert BatchOutOfGas(i);
                emit PaymentRejected(charges[i].settlementId, reason);
            }
        }
    }

    /// @notice One charge of a batch, in its own call frame so that its failure rolls back
    ///         only itself. Callable by this contract only.
    /// @param charge The settlement to pay.
    function settleFromBatch(Charge calldata charge) external {
        if (msg.sender != address(this)) revert OnlySelf();
        _pay(charge);
    }

    function _pay(Charge memory c) private {
        if (c.user == address(0)) revert ZeroAddress("user");
        if (c.provider == address(0)) revert ZeroAddress("provider");
        if (c.durationSeconds == 0) revert ZeroSeconds(c.settlementId);
        uint256 rate = rates[c.gpuType];
        if (rate == 0) revert UnknownGpuType(c.gpuType);
        uint256 word = c.settlementId >> 8;
        uint256 bit = 1 << (c.settlementId & 0xff);
        uint256 bits = _paid[word];
        if (bits & bit != 0) revert AlreadyPaid(c.settlementId);

        Lease storage l = _leases[c.lease];
        uint256 billed = _checkLease(l, c, rate);
        uint256 amount = c.durationSeconds * c.gpuCount * rate;
        Budget storage b = budgets[c.user];
        uint256 spent = b.spent + amount;
        if (spent > b.cap) revert CapExceeded(c.user, spent, b.cap);
        uint256 fee = amount * feeBps / BPS;

        _paid[word] = bits | bit;
        // Both fit: billed <= allowed seconds < 2**40, spent <= cap < 2**128.
        l.billedSeconds = uint40(billed);
        b.spent = uint128(spent);
        emit Paid(
            c.settlementId,
            c.user,
            c.provider,
            c.lease,
            c.gpuType,
            c.gpuCount,
            c.durationSeconds,
            rate,
            amount,
            fee
        );
        token.safeTransferFrom(c.user, c.provider, amount - fee);
        if (fee != 0) token.safeTransferFrom(c.user, treasury, fee);
    }

    function _checkLease(Lease storage l, Charge memory c, uint256 rate)
        private
        view
        returns (uint256 billed)
    {
        if (l.user == address(0)) revert UnknownLease(c.lease);
        if (l.user != c.user) revert LeaseMismatch(c.lease, "user");
        if (l.provider != c.provider) revert LeaseMismatch(c.lease, "provider");
        if (l.gpuType != c.gpuType) revert LeaseMismatch(c.lease, "gpuType");
        if (l.gpuCount != c.gpuCount) revert LeaseMismatch(c.lease, "gpuCount");
        if (rate > l.maxRate) revert RateAboveLease(c.lease, rate, l.maxRate);
        uint256 until = l.end == 0 ? block.timestamp : l.end;
        uint256 allowed = until > l.start ? until - l.start : 0;
        billed = l.billedSeconds + c.durationSeconds;
        if (billed > allowed) revert LeaseExceeded(c.lease, billed, allowed);
    }

    // ---- leases ------------------------------------------------------------------------

    /// @notice The id of a user's lease for one run of a pod.
    /// @param user The lease's user.
    /// @param pod The pod id (ASCII, right-padded with zeros).
    /// @param generation The run of the pod.
    /// @return The lease id.
    function leaseId(address user, bytes32 pod, uint32 generation) public pure returns (bytes32) {
        return keccak256(abi.encode(user, pod, generation));
    }

    /// @notice Open a lease with the user's EIP-712 signature (or ERC-1271 for contract
    ///         wallets) over `terms`. Anyone may submit it; usually the operator does.
    /// @param terms What the user agreed to.
    /// @param signature The user's signature over the typed `terms`.
    /// @return id The lease id.
    function openLease(LeaseTerms calldata terms, bytes calldata signature)
        external
        whenNotPaused
        returns (bytes32 id)
    {
        if (terms.user == address(0)) revert ZeroAddress("user");
        if (terms.provider == address(0)) revert ZeroAddress("provider");
        if (terms.gpuCount == 0) revert ZeroGpuCount();
        // 0 would read as "not closed" in `end`, and starts past 40 bits would be truncated.
        if (terms.start == 0 || terms.start > type(uint40).max) revert BadLeaseStart(terms.start);
        id = leaseId(terms.user, terms.pod, terms.generation);
        if (_leases[id].user != address(0)) revert LeaseExists(id);
        bytes32 digest = _hashTypedDataV4(keccak256(abi.encode(LEASE_TYPEHASH, terms)));
        if (!SignatureChecker.isValidSignatureNow(terms.user, digest, signature)) {
            revert BadLeaseSignature(terms.user);
        }
        _leases[id] = Lease({
            user: terms.user,
            start: uint40(terms.start),
            end: 0,
            gpuCount: terms.gpuCount,
            provider: terms.provider,
            billedSeconds: 0,
            gpuType: terms.gpuType,
            maxRate: terms.maxRate
        });
        emit LeaseOpened(
            id,
            terms.user,
            terms.provider,
            terms.pod,
            terms.generation,
            terms.gpuType,
            terms.gpuCount,
            terms.maxRate,
            terms.start
        );
    }

    /// @notice Close a lease: nothing past `end` (at most now) can be billed. The user may
    ///         close their own lease at any time; operators close it when the run ends.
    /// @param id The lease id.
    /// @param end When the run ended; clamped to now, and to no earlier than what was billed.
    function closeLease(bytes32 id, uint64 end) external {
        Lease storage l = _leases[id];
        if (l.user == address(0)) revert UnknownLease(id);
        if (msg.sender != l.user && !hasRole(OPERATOR_ROLE, msg.sender)) {
            revert NotLeaseParty(id, msg.sender);
        }
        if (l.end != 0) revert LeaseAlreadyClosed(id);
        uint256 closedAt = end > block.timestamp ? block.timestamp : end;
        uint256 floor = uint256(l.start) + l.billedSeconds;
        if (closedAt < floor) closedAt = floor;
        // A timestamp: fits 40 bits for the next 34,000 years.
        l.end = uint40(closedAt);
        emit LeaseClosed(id, msg.sender, uint64(closedAt));
    }

    /// @notice A lease as stored.
    /// @param id The lease id.
    /// @return The lease; `user` is zero when there is none.
    function leaseOf(bytes32 id) external view returns (Lease memory) {
        return _leases[id];
    }

    // ---- users -------------------------------------------------------------------------

    /// @notice Set the most the operator may ever charge you in total (spent so far counts).
    /// @param cap Base units; values above 2**128 - 1 are taken as that.
    function setSpendingCap(uint256 cap) external {
        uint128 capped = cap > type(uint128).max ? type(uint128).max : uint128(cap);
        Budget storage b = budgets[msg.sender];
        b.cap = capped;
        emit SpendingCapSet(msg.sender, capped, b.spent);
    }

    /// @notice Whether a settlement id was paid.
    /// @param settlementId The id.
    /// @return True once paid.
    function isPaid(uint256 settlementId) external view returns (bool) {
        return _paid[settlementId >> 8] & (1 << (settlementId & 0xff)) != 0;
    }

    /// @notice What a payment would charge now: the amount and the fee within it.
    /// @param durationSeconds Seconds of use.
    /// @param gpuType The GPU type.
    /// @param gpuCount How many GPUs.
    /// @return amount Base units taken from the user.
    /// @return fee The part of `amount` that goes to the treasury.
    function quote(uint256 durationSeconds, bytes32 gpuType, uint256 gpuCount)
        external
        view
        returns (uint256 amount, uint256 fee)
    {
        uint256 rate = rates[gpuType];
        if (rate == 0) revert UnknownGpuType(gpuType);
        amount = durationSeconds * gpuCount * rate;
        fee = amount * feeBps / BPS;
    }

    // ---- administration ----------------------------------------------------------------

    /// @notice Set a GPU type's rate in base units per GPU per second (0 removes it).
    /// @param gpuType The GPU type.
    /// @param rate The new rate.
    function setRate(bytes32 gpuType, uint256 rate) external onlyRole(RATE_ADMIN_ROLE) {
        _setRate(gpuType, rate);
    }

    /// @notice Set several rates at once.
    /// @param gpuTypes The GPU types.
    /// @param newRates Their rates, in the same order.
    function setRates(bytes32[] calldata gpuTypes, uint256[] calldata newRates)
        external
        onlyRole(RATE_ADMIN_ROLE)
    {
        if (gpuTypes.length != newRates.length) revert LengthMismatch(gpuTypes.length, newRates.length);
        for (uint256 i; i < gpuTypes.length; ++i) {
            _setRate(gpuTypes[i], newRates[i]);
        }
    }

    function _setRate(bytes32 gpuType, uint256 rate) private {
        if (gpuType == bytes32(0)) revert UnknownGpuType(gpuType);
        emit RateSet(gpuType, rates[gpuType], rate);
        rates[gpuType] = rate;
    }

    /// @notice Set the platform fee.
    /// @param bps Basis points, at most `MAX_FEE_BPS`.
    function setFee(uint16 bps) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (bps > MAX_FEE_BPS) revert FeeTooHigh(bps, MAX_FEE_BPS);
        emit FeeSet(feeBps, bps);
        feeBps = bps;
    }

    /// @notice Set where platform fees go.
    /// @param treasury_ The new treasury.
    function setTreasury(address treasury_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (treasury_ == address(0)) revert ZeroAddress("treasury");
        emit TreasurySet(treasury, treasury_);
        treasury = treasury_;
    }

    /// @notice Stop all payments and lease openings (a guardian's emergency brake).
    function pause() external onlyRole(GUARDIAN_ROLE) {
        _pause();
        emit PaymentsPaused(msg.sender);
    }

    /// @notice Resume payments (the admin only).
    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
        emit PaymentsResumed(msg.sender);
    }
}
