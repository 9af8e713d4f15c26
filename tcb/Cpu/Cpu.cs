using SecureVmm.Tcb.Devices;
using SecureVmm.Tcb.Exits;
using SecureVmm.Tcb.Memory;

namespace SecureVmm.Tcb.Cpu;

/// <summary>
/// The software x86 CPU: an i686-class (P6 family) processor with real mode, 16/32-bit protected
/// mode, 32-bit paging and a soft TLB. Instructions are decoded once with Iced into per-page
/// cached blocks and dispatched through a handler table (one source file per instruction group).
/// The CPU leaves guest context only through <see cref="IExitHandler.OnExit"/> and returns from
/// <see cref="Run"/> with a <see cref="RunStatus"/>. See docs/cpu.md.
/// </summary>
public sealed partial class Cpu
{
    // Events raised by a handler for the run loop to act on after the instruction.
    private const int EvFault = 1;      // a guest fault is pending: the instruction did not retire
    private const int EvBreak = 2;      // leave the current block (mode change, exit, code write ...)
    private const int EvStop = 4;       // exit handler asked to stop
    private const int EvShutdown = 8;   // triple fault
    private const int EvNoRetire = 16;  // the instruction restarts (REP budget split): do not count it

    internal GprFile _gpr;
    internal SegmentFile _seg;
    internal uint _eip;
    internal uint _eflags = EflagsBits.Reserved1;
    internal int _cpl;

    internal uint _cr0, _cr2, _cr3, _cr4;
    internal DebugRegisterFile _dr;
    internal uint _gdtrBase, _idtrBase;
    internal ushort _gdtrLimit, _idtrLimit;
    internal SegmentCache _ldtr, _tr;

    internal uint _sysenterCs, _sysenterEsp, _sysenterEip;
    private ulong _tscOffset;

    private readonly PhysicalMemoryMap _map;
    private readonly byte[] _ram;
    private readonly uint _ramSize;
    private IExitHandler _exitHandler;
    internal VmExit _exit;

    private int _event;
    private long _icount;
    private long _budgetEnd;
    private long _shadowAt = -1;    // STI / MOV SS interrupt shadow: no interrupt at this boundary
    private bool _halted;
    private bool _shutdown;
    private uint _espAtStart;

    public Cpu(PhysicalMemoryMap memoryMap, IExitHandler exitHandler)
    {
        ArgumentNullException.ThrowIfNull(memoryMap);
        ArgumentNullException.ThrowIfNull(exitHandler);
        _map = memoryMap;
        _ram = memoryMap.Ram.Bytes;
        _ramSize = (uint)Math.Min(memoryMap.Ram.Size, 0xFFFF_F000L);
        _exitHandler = exitHandler;
        int ramPages = (int)((memoryMap.Ram.Size + 4095) >> 12);
        _pageGeneration = new uint[ramPages];
        _codePages = new ulong[(ramPages + 63) / 64];
        memoryMap.RamWritten = (address, length) => InvalidateCodeRange(address, length);
        InitTlb();
        InitCodeCache();
        Reset();
    }

    /// <summary>The machine's interrupt controller (INTR line), or null for none.</summary>
    public IInterruptSource? Interrupts { get; set; }

    /// <summary>The exit dispatch point.</summary>
    public IExitHandler ExitHandler
    {
        get => _exitHandler;
        set => _exitHandler = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>Guest instructions retired so far: the VM's virtual clock.</summary>
    public long InstructionCount => _icount;

    /// <summary>TSC ticks per retired instruction (deterministic virtual time; RDTSC = count × ratio + offset).</summary>
    public uint TscPerInstruction { get; set; } = 1;

    /// <summary>
    /// When set, the TSC counts this clock (virtual nanoseconds: a 1 GHz TSC) instead of retired
    /// instructions. The machine sets it in realtime mode; it must never go backwards.
    /// </summary>
    public Func<ulong>? TscClock { get; set; }

    /// <summary>True after HLT until an interrupt is delivered.</summary>
    public bool IsHalted => _halted;
    public bool IsShutdown => _shutdown;

    public uint Eip { get => _eip; set { _eip = value; } }
    public int Cpl => _cpl;
    public uint Cr0 => _cr0;
    public uint Cr2 { get => _cr2; set => _cr2 = value; }
    public uint Cr3 => _cr3;
    public uint Cr4 => _cr4;
    public uint GdtrBase => _gdtrBase;
    public ushort GdtrLimit => _gdtrLimit;
    public uint IdtrBase => _idtrBase;
    public ushort IdtrLimit => _idtrLimit;
    public ushort Tr => _tr.Selector;
    public ushort Ldtr => _ldtr.Selector;

    public uint GetGpr(Gpr r) => _gpr[(int)r];
    public void SetGpr(Gpr r, uint value) => _gpr[(int)r] = value;
    public uint Eax { get => _gpr[0]; set => _gpr[0] = value; }
    public uint Ecx { get => _gpr[1]; set => _gpr[1] = value; }
    public uint Edx { get => _gpr[2]; set => _gpr[2] = value; }
    public uint Ebx { get => _gpr[3]; set => _gpr[3] = value; }
    public uint Esp { get => _gpr[4]; set => _gpr[4] = value; }
    public uint Ebp { get => _gpr[5]; set => _gpr[5] = value; }
    public uint Esi { get => _gpr[6]; set => _gpr[6] = value; }
    public uint Edi { get => _gpr[7]; set => _gpr[7] = value; }

    public SegmentCache GetSegment(SegReg s) => _seg[(int)s];

    /// <summary>
    /// Power-on / RESET state (Intel SDM vol. 3, 9.1.1, table 9-1): real mode, CS selector F000
    /// with hidden base FFFF0000, EIP FFF0, so the first fetch is at FFFFFFF0; EDX holds the
    /// processor signature.
    /// </summary>
    public void Reset()
    {
        for (int i = 0; i < 8; i++)
        {
            _gpr[i] = 0;
        }
        _gpr[2] = CpuidModel.Signature;
        _eflags = EflagsBits.Reserved1;
        _lfLazy = false;
        _cr0 = ControlBits.Cr0ET | ControlBits.Cr0CD | ControlBits.Cr0NW;
        _cr2 = _cr3 = _cr4 = 0;
        for (int i = 0; i < 8; i++)
        {
            _dr[i] = 0;
        }
        _dr[6] = 0xFFFF0FF0;
        _dr[7] = 0x400;
        for (int i = 0; i < 6; i++)
        {
            _seg[i] = RealModeSegment(0);
        }
        _seg[(int)SegReg.Cs] = RealModeSegment(0xF000);
        _seg[(int)SegReg.Cs].Base = 0xFFFF_0000;
        _eip = 0xFFF0;
        _cpl = 0;
        _gdtrBase = _idtrBase = 0;
        _gdtrLimit = _idtrLimit = 0xFFFF;
        _ldtr = new SegmentCache { Attributes = 0x82, Limit = 0xFFFF };
        _tr = new SegmentCache { Attributes = 0x8B, Limit = 0xFFFF };
        _sysenterCs = _sysenterEsp = _sysenterEip = 0;
        // RESET clears the TSC (SDM vol. 3, 17.17); virtual time itself keeps counting.
        _tscOffset = 0 - TscBase;
        _halted = false;
        _shutdown = false;
        _shadowAt = -1;
        ResetX87();
        UpdatePermissionBits();
        FlushTlb(includeGlobal: true);
    }

    /// <summary>A real-mode segment: base = selector × 16, 64 KiB limit, read/write data (SDM vol. 3, 20.1.1).</summary>
    private static SegmentCache RealModeSegment(ushort selector) => new()
    {
        Selector = selector,
        Base = (uint)selector << 4,
        Limit = 0xFFFF,
        Attributes = 0x93,
        Rights = SegmentRights.Read | SegmentRights.Write | SegmentRights.Usable,
    };

    /// <summary>Starts in real mode at <paramref name="cs"/>:<paramref name="ip"/> (a configurable start instead of F000:FFF0).</summary>
    public void SetRealModeEntry(ushort cs, ushort ip)
    {
        _seg[(int)SegReg.Cs] = RealModeSegment(cs);
        _eip = ip;
    }

    /// <summary>
    /// Enters 32-bit flat protected mode the way Multiboot v1 (section 3.2 "Machine state") and the
    /// Linux 32-bit boot protocol expect: CS a 32-bit execute/read segment and DS/ES/FS/GS/SS 32-bit
    /// read/write data segments, all base 0 limit 4 GiB; CR0.PE=1, paging off, interrupts off.
    /// Selectors are 0x10 (code) and 0x18 (data), as in Linux's boot GDT; GDTR is left for the
    /// guest to load (both protocols require the OS to set up its own GDT before reloading segments).
    /// </summary>
    public void EnterFlatProtectedMode(uint entry, uint eax = 0, uint ebx = 0, uint esi = 0)
    {
        // Caches enabled (CD=NW=0) as a BIOS leaves them before a boot loader runs.
        _cr0 = (_cr0 | ControlBits.Cr0PE | ControlBits.Cr0ET) & ~(ControlBits.Cr0PG | ControlBits.Cr0CD | ControlBits.Cr0NW);
        var code = new SegmentCache
        {
            Selector = 0x10, Base = 0, Limit = 0xFFFF_FFFF, Attributes = 0xC09B,
            Rights = SegmentRights.Read | SegmentRights.Usable,
        };
        var data = new SegmentCache
        {
            Selector = 0x18, Base = 0, Limit = 0xFFFF_FFFF, Attributes = 0xC093,
            Rights = SegmentRights.Read | SegmentRights.Write | SegmentRights.Usable,
        };
        _seg[(int)SegReg.Cs] = code;
        for (int s = 0; s < 6; s++)
        {
            if (s != (int)SegReg.Cs)
            {
                _seg[s] = data;
            }
        }
        _cpl = 0;
        _eflags = EflagsBits.Reserved1;
        _lfLazy = false;
        _eip = entry;
        _gpr[0] = eax;
        _gpr[3] = ebx;
        _gpr[6] = esi;
        UpdatePermissionBits();
        FlushTlb(includeGlobal: true);
    }

    internal bool ProtectedMode => (_cr0 & ControlBits.Cr0PE) != 0;
    internal bool V86Mode => (_eflags & EflagsBits.VM) != 0;

    /// <summary>
    /// Runs at most <paramref name="maxInstructions"/> guest instructions. Returns early when the
    /// guest halts with no deliverable interrupt, when the exit handler says Stop, or on shutdown.
    /// </summary>
    public RunStatus Run(long maxInstructions)
    {
        if (_shutdown)
        {
            return RunStatus.Shutdown;
        }
        _event = 0;
        _budgetEnd = _icount + Math.Max(0, maxInstructions);
        while (_icount < _budgetEnd)
        {
            // Interrupt window: external interrupts are taken between instructions when IF=1 and no
            // STI/MOV SS shadow is active (SDM vol. 3, 6.8.3 and 6.9). The check runs at block
            // boundaries; every event that can change the INTR line (exits, STI, POPF, IRET) ends a block.
            if (_halted || ((_eflags & EflagsBits.IF) != 0 && _shadowAt != _icount))
            {
                var source = Interrupts;
                bool pending = (_eflags & EflagsBits.IF) != 0 && _shadowAt != _icount && source is not null && source.HasPending;
                if (pending)
                {
                    _halted = false;
                    byte vector = source!.Acknowledge();
                    _icount++; // an interrupt delivery consumes budget, like an exception (see HandlePendingFault)
                    DeliverEvent(vector, 0, hasError: false, InterruptKind.External, _eip);
                    if (CheckRunEnd(out var s))
                    {
                        return s;
                    }
                    continue;
                }
                if (_halted)
                {
                    return RunStatus.Halted;
                }
            }
            ExecuteBlock();
            if (_event != 0 && CheckRunEnd(out var status))
            {
                return status;
            }
        }
        return RunStatus.BudgetExhausted;
    }

    private bool CheckRunEnd(out RunStatus status)
    {
        int ev = _event;
        _event = 0;
        if (_shutdown || (ev & EvShutdown) != 0)
        {
            status = RunStatus.Shutdown;
            return true;
        }
        if ((ev & EvStop) != 0)
        {
            status = RunStatus.Stopped;
            return true;
        }
        status = RunStatus.BudgetExhausted;
        return false;
    }

    /// <summary>
    /// Runs decoded blocks until an event, the end of the budget, a single-step trap, or a block
    /// boundary at which the run loop has work (an interrupt to deliver, HLT). Going on to the
    /// next block here instead of returning to <see cref="Run"/> is the same interrupt-window check
    /// Run makes (SDM vol. 3, 6.8.3), without the round trip; the block that ran last stays in a
    /// local so that chaining it to its successor costs no heap write until the loop ends. A block
    /// with a compiled form runs that instead when it may (BlockCompiler.cs), with the same effect.
    /// </summary>
    private void ExecuteBlock()
    {
        Block? last = _lastBlock;
        while (true)
        {
            bool singleStep = (_eflags & EflagsBits.TF) != 0;
            Block? block = FetchBlock(last);
            if (block is null)
            {
                _lastBlock = null;
                // The fetch raised a fault (#PF, #GP on CS limit); deliver it.
                HandlePendingFault();
                return;
            }
            last = block.Cached ? block : null;
            int first = 0; // where interpretation starts: 0, or where a compiled block handed over
            if (last is not null && !singleStep && _shadowAt != _icount && _icount + block.Count <= _budgetEnd && _compileThreshold > 0)
            {
                if (block.Compiled is null && !block.Queued && ++block.Runs >= _compileThreshold)
                {
                    BlockIsHot(block);
                }
                if (block.Compiled is { } compiled)
                {
                    _lastBlock = last;
                    first = compiled(this, block.Insns);
                    if (first == BlockEnded || _icount >= _budgetEnd)
                    {
                        return;
                    }
                    if (first == BlockDone)
                    {
                        if (_halted || ((_eflags & EflagsBits.IF) != 0 && _shadowAt != _icount && Interrupts is { HasPending: true }))
                        {
                            return;
                        }
                        continue;
                    }
                }
            }
            int count = block.Count;
            if (first == 0 && (singleStep || _shadowAt == _icount))
            {
                // One instruction only: after TF for the #DB trap, after STI/MOV SS so that the
                // boundary right after the shadowed instruction is checked for interrupts.
                count = 1;
            }
            // A span of exactly the instructions to run: one range check here, none per instruction.
            Span<DecodedInsn> insns = block.Insns.AsSpan(0, count);
            for (int i = first; i < insns.Length; i++)
            {
                ref DecodedInsn d = ref insns[i];
                _espAtStart = _gpr[4];
                _currentInsnEip = d.Eip;
                _eip = d.NextEip;
                ExecuteFast(ref d);
                if (_event != 0)
                {
                    _lastBlock = last;
                    EndInstructionOnEvent(ref d, singleStep);
                    return;
                }
                if (++_icount >= _budgetEnd)
                {
                    _lastBlock = last;
                    if (singleStep)
                    {
                        SingleStepTrap();
                    }
                    return;
                }
            }
            if (singleStep)
            {
                _lastBlock = last;
                SingleStepTrap();
                return;
            }
            // Block boundary: the run loop's interrupt window check. Return to it only when an
            // interrupt is deliverable now or the CPU is halted.
            if (_halted || ((_eflags & EflagsBits.IF) != 0 && _shadowAt != _icount && Interrupts is { HasPending: true }))
            {
                _lastBlock = last;
                return;
            }
        }
    }

    /// <summary>
    /// The instruction <paramref name="d"/> raised an event: a fault rolls ESP and EIP back to the
    /// instruction and delivers it (it did not retire); anything else retires it (unless it
    /// restarts, EvNoRetire) and ends the block, with the single-step trap after it when TF was set.
    /// </summary>
    private void EndInstructionOnEvent(ref DecodedInsn d, bool singleStep)
    {
        int ev = _event;
        if ((ev & EvFault) != 0)
        {
            _gpr[4] = _espAtStart;
            _eip = d.Eip;
            _event = ev & ~(EvFault | EvBreak | EvNoRetire);
            HandlePendingFault();
            return;
        }
        if ((ev & EvNoRetire) == 0)
        {
            _icount++;
        }
        _event = ev & ~(EvBreak | EvNoRetire);
        if (singleStep)
        {
            SingleStepTrap();
        }
    }

    /// <summary>
    /// Calls the exit dispatch point with the current instruction's CS:EIP and count filled in.
    /// Returns false when the handler asked to stop (the run loop returns after this instruction).
    /// </summary>
    internal bool RaiseExit(ExitKind kind)
    {
        _exit.Kind = kind;
        _exit.Cs = _seg[(int)SegReg.Cs].Selector;
        _exit.Eip = _currentInsnEip;
        _exit.InstructionCount = (ulong)_icount;
        var action = _exitHandler.OnExit(ref _exit);
        _event |= EvBreak;
        if (action == ExitAction.Stop)
        {
            _event |= EvStop;
            return false;
        }
        return true;
    }

    // EIP of the instruction being executed, for exit records and fault frames.
    internal uint _currentInsnEip;

    /// <summary>Leaves the halted state without an interrupt (e.g. for an INIT/NMI-like wake-up by the machine).</summary>
    public void ClearHalt() => _halted = false;

    private ulong ReadTsc() => TscAt(_icount);

    /// <summary>
    /// The TSC when <paramref name="count"/> instructions have retired. Its time base is the
    /// machine's virtual clock when it supplies one (realtime mode, where halted time passes
    /// without instructions: a TSC that stood still while the guest idles would stop a guest that
    /// keeps time by the TSC), else the retired-instruction count.
    /// </summary>
    private ulong TscAt(long count) => TscBaseAt(count) + _tscOffset;

    private ulong TscBase => TscBaseAt(_icount);

    private ulong TscBaseAt(long count) => TscClock is { } clock ? clock() : (ulong)count * TscPerInstruction;
}
