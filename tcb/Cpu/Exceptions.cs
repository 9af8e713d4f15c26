using SecureVmm.Tcb.Exits;

namespace SecureVmm.Tcb.Cpu;

/// <summary>Exception vectors (Intel SDM vol. 3, 6.3.1, table 6-1).</summary>
public static class Vector
{
    public const byte DE = 0, DB = 1, NMI = 2, BP = 3, OF = 4, BR = 5, UD = 6, NM = 7, DF = 8,
        TS = 10, NP = 11, SS = 12, GP = 13, PF = 14, MF = 16, AC = 17, MC = 18;

    /// <summary>Exceptions that push an error code (SDM vol. 3, 6.13).</summary>
    public static bool HasErrorCode(int v) => v is DF or TS or NP or SS or GP or PF or AC;
}

/// <summary>How an interrupt or exception was raised; decides privilege checks and the EXT bit.</summary>
internal enum InterruptKind : byte
{
    /// <summary>A processor-detected exception (fault/trap/abort).</summary>
    Exception,
    /// <summary>An external interrupt from the INTR line.</summary>
    External,
    /// <summary>INT n: the gate's DPL is checked against CPL (SDM vol. 3, 6.12.1.1).</summary>
    Software,
    /// <summary>INT3 and INTO: software-raised exceptions, also DPL-checked.</summary>
    SoftwareException,
}

// Exception and interrupt delivery (SDM vol. 3, ch. 6): real mode through the IVT (vol. 3, 20.1.4),
// protected mode through interrupt/trap/task gates with a TSS stack switch for inner privilege
// (6.12.1), the double-fault rules of table 6-5 (6.15) and shutdown on a triple fault.
public sealed partial class Cpu
{
    private bool _pendingFault;
    private byte _pfVector;
    private uint _pfError;

    /// <summary>Raises a guest fault: the current instruction is abandoned and the exception delivered.</summary>
    internal void Fault(byte vector, uint error)
    {
        if (_pendingFault)
        {
            return; // the first fault detected wins
        }
        _pendingFault = true;
        _pfVector = vector;
        _pfError = error;
        _event |= EvFault;
    }

    internal void Fault(byte vector) => Fault(vector, 0);

    private void HandlePendingFault()
    {
        if (!_pendingFault)
        {
            return;
        }
        _pendingFault = false;
        _event &= ~EvFault;
        byte v = _pfVector;
        // Each delivered exception consumes one unit of the instruction budget (and of virtual
        // time), so a guest stuck in a fault loop still returns to the VMM when its budget ends.
        _icount++;
        DeliverEvent(v, _pfError, Vector.HasErrorCode(v), InterruptKind.Exception, _eip);
    }

    private static bool IsContributory(int v) => v is Vector.DE or Vector.TS or Vector.NP or Vector.SS or Vector.GP;

    /// <summary>
    /// Delivers an interrupt or exception with <paramref name="returnEip"/> as the saved EIP. A fault
    /// raised during delivery is combined per SDM vol. 3 table 6-5: contributory after contributory,
    /// or anything but a benign one after #PF, becomes #DF; a fault while delivering #DF is a triple
    /// fault and the CPU enters shutdown (a Shutdown exit).
    /// </summary>
    internal void DeliverEvent(int vector, uint error, bool hasError, InterruptKind kind, uint returnEip)
    {
        for (int round = 0; round < 4; round++)
        {
            var snapshot = SaveDeliveryState();
            _pendingFault = false;
            _event &= ~EvFault;
            if (ProtectedMode)
            {
                DeliverProtected(vector, error, hasError, kind, returnEip);
            }
            else
            {
                DeliverReal(vector, returnEip);
            }
            _event |= EvBreak;
            if (!_pendingFault)
            {
                _halted = false;
                return;
            }
            RestoreDeliveryState(in snapshot);
            _pendingFault = false;
            _event &= ~EvFault;
            int second = _pfVector;
            if (vector == Vector.DF)
            {
                EnterShutdown();
                return;
            }
            bool firstIsPf = vector == Vector.PF && kind == InterruptKind.Exception;
            bool firstContrib = IsContributory(vector) && kind == InterruptKind.Exception;
            if ((firstContrib && IsContributory(second)) || (firstIsPf && (second == Vector.PF || IsContributory(second))))
            {
                vector = Vector.DF;
                error = 0;
                hasError = true;
            }
            else
            {
                vector = second;
                error = _pfError;
                hasError = Vector.HasErrorCode(second);
            }
            if (kind is InterruptKind.Software or InterruptKind.SoftwareException)
            {
                // A fault raised by INT n itself (gate DPL, bad gate) is a fault on the INT instruction.
                returnEip = _currentInsnEip;
            }
            kind = InterruptKind.Exception;
        }
        EnterShutdown();
    }

    private void EnterShutdown()
    {
        _shutdown = true;
        _event |= EvShutdown;
        _exit.Address = 0;
        _exit.Value = 0;
        RaiseExit(ExitKind.Shutdown);
    }

    private readonly struct DeliveryState(SegmentCache cs, SegmentCache ss, uint esp, uint eip, uint eflags, int cpl)
    {
        public readonly SegmentCache Cs = cs, Ss = ss;
        public readonly uint Esp = esp, Eip = eip, Eflags = eflags;
        public readonly int Cpl = cpl;
    }

    private DeliveryState SaveDeliveryState() =>
        new(_seg[(int)SegReg.Cs], _seg[(int)SegReg.Ss], _gpr[4], _eip, Eflags, _cpl);

    private void RestoreDeliveryState(in DeliveryState s)
    {
        _seg[(int)SegReg.Cs] = s.Cs;
        _seg[(int)SegReg.Ss] = s.Ss;
        _gpr[4] = s.Esp;
        _eip = s.Eip;
        Eflags = s.Eflags;
        _cpl = s.Cpl;
        UpdatePermissionBits();
    }

    /// <summary>Real-address-mode delivery through the interrupt vector table (SDM vol. 3, 20.1.4).</summary>
    private void DeliverReal(int vector, uint returnEip)
    {
        uint entry = (uint)vector * 4;
        if (entry + 3 > _idtrLimit)
        {
            Fault(Vector.GP, 0);
            return;
        }
        uint ip = ReadLinSystem(_idtrBase + entry, 2);
        uint cs = ReadLinSystem(_idtrBase + entry + 2, 2);
        if (Faulted) return;
        uint flags = Eflags;
        Push(flags & 0xFFFF, 2);
        Push(_seg[(int)SegReg.Cs].Selector, 2);
        Push(returnEip & 0xFFFF, 2);
        if (Faulted) return;
        _eflags &= ~(EflagsBits.IF | EflagsBits.TF | EflagsBits.AC | EflagsBits.RF);
        LoadRealModeSegment((int)SegReg.Cs, (ushort)cs);
        _eip = ip;
    }

    /// <summary>Protected-mode delivery through the IDT (SDM vol. 3, 6.10-6.12 and the INT n pseudo-code).</summary>
    private void DeliverProtected(int vector, uint error, bool hasError, InterruptKind kind, uint returnEip)
    {
        uint ext = kind is InterruptKind.External or InterruptKind.Exception ? 1u : 0u;
        uint idtErr = (uint)vector * 8 + 2 + ext;
        if ((uint)vector * 8 + 7 > _idtrLimit)
        {
            Fault(Vector.GP, idtErr);
            return;
        }
        uint lo = ReadLinSystem(_idtrBase + (uint)vector * 8, 4);
        uint hi = ReadLinSystem(_idtrBase + (uint)vector * 8 + 4, 4);
        if (Faulted) return;
        int type = (int)(hi >> 8) & 0x1F;
        int gateDpl = (int)(hi >> 13) & 3;
        if (type is not (5 or 6 or 7 or 14 or 15))
        {
            Fault(Vector.GP, idtErr);
            return;
        }
        if (kind is InterruptKind.Software or InterruptKind.SoftwareException && gateDpl < _cpl)
        {
            Fault(Vector.GP, idtErr);
            return;
        }
        if ((hi & 0x8000) == 0)
        {
            Fault(Vector.NP, idtErr);
            return;
        }
        if (type == 5)
        {
            // Task gate: switch tasks; the error code goes on the new task's stack (SDM vol. 3, 6.12.2).
            ushort tss = (ushort)(lo >> 16);
            if (!TaskSwitch(tss, TaskSwitchReason.Interrupt, returnEip, ext))
            {
                return;
            }
            if (hasError)
            {
                Push(error, _tr.Type == 0xB || _tr.Type == 0x9 ? 4 : 2);
            }
            return;
        }
        bool gate32 = (type & 8) != 0;
        bool trapGate = (type & 1) != 0;
        ushort selector = (ushort)(lo >> 16);
        uint offset = gate32 ? (lo & 0xFFFF) | (hi & 0xFFFF_0000) : lo & 0xFFFF;
        if ((selector & 0xFFFC) == 0)
        {
            Fault(Vector.GP, ext);
            return;
        }
        if (!ReadDescriptor(selector, out ulong desc, ext))
        {
            return;
        }
        var target = DescriptorToCache(selector, desc);
        int dpl = target.Dpl;
        if (target.IsSystem || (target.Type & 8) == 0 || dpl > _cpl)
        {
            Fault(Vector.GP, (uint)(selector & 0xFFFC) + ext);
            return;
        }
        if (!target.Present)
        {
            Fault(Vector.NP, (uint)(selector & 0xFFFC) + ext);
            return;
        }
        if (V86Mode)
        {
            // Virtual-8086 mode is not offered: VM can never become 1 (see docs/cpu.md).
            Fault(Vector.GP, (uint)(selector & 0xFFFC) + ext);
            return;
        }
        int size = gate32 ? 4 : 2;
        uint flags = Eflags;
        bool conforming = (target.Type & 4) != 0;
        if (!conforming && dpl < _cpl)
        {
            // Inner privilege: take SS:ESP for the new level from the TSS (SDM vol. 3, 6.12.1, 7.2.1).
            if (!ReadTssStack(dpl, out ushort newSs, out uint newEsp, ext))
            {
                return;
            }
            if (!LoadStackForPrivilege(newSs, dpl, ext, out SegmentCache ssCache))
            {
                return;
            }
            ushort oldSs = _seg[(int)SegReg.Ss].Selector;
            uint oldEsp = _gpr[4];
            _seg[(int)SegReg.Ss] = ssCache;
            _gpr[4] = newEsp;
            _cpl = dpl;
            UpdatePermissionBits();
            Push(oldSs, size);
            Push(oldEsp, size);
        }
        else if (!conforming && dpl != _cpl)
        {
            Fault(Vector.GP, (uint)(selector & 0xFFFC) + ext);
            return;
        }
        Push(flags, size);
        Push(_seg[(int)SegReg.Cs].Selector, size);
        Push(returnEip, size);
        if (hasError)
        {
            Push(error, size);
        }
        if (Faulted) return;
        target.Selector = (ushort)((selector & 0xFFFC) | _cpl);
        _seg[(int)SegReg.Cs] = target;
        SetAccessedBit(selector, desc);
        _eflags &= ~(EflagsBits.TF | EflagsBits.NT | EflagsBits.RF | EflagsBits.VM);
        if (!trapGate)
        {
            _eflags &= ~EflagsBits.IF;
        }
        _eip = gate32 ? offset : offset & 0xFFFF;
    }

    /// <summary>After an instruction executed with TF=1: a single-step trap #DB (SDM vol. 3, 17.3.1.4).</summary>
    private void SingleStepTrap()
    {
        if (_shutdown || _pendingFault)
        {
            return;
        }
        _dr[6] |= 0x4000; // BS
        DeliverEvent(Vector.DB, 0, false, InterruptKind.Exception, _eip);
    }
}
