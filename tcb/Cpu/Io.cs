using Iced.Intel;
using SecureVmm.Tcb.Exits;

namespace SecureVmm.Tcb.Cpu;

// Port I/O (SDM vol. 1, ch. 19 "Input/Output"): IN/OUT and, in Strings.cs, INS/OUTS. In protected
// mode with CPL > IOPL every byte of the access must be permitted by the TSS I/O permission
// bitmap (19.5.2), else #GP(0). Each access is one IoIn/IoOut exit to the machine.
public sealed partial class Cpu
{
    private static void RegisterIo()
    {
        On(Mnemonic.In, (c, ref d) =>
        {
            ushort port = d.Kind1 == OpKindCode.Imm ? (ushort)(d.Imm & 0xFF) : (ushort)c._gpr[2];
            int size = d.OpSize;
            if (!c.CheckIoPermission(port, size)) return;
            uint v = c.PortIn(port, size);
            c.WriteReg(d.Reg0, v);
        });
        On(Mnemonic.Out, (c, ref d) =>
        {
            ushort port = d.Kind0 == OpKindCode.Imm ? (ushort)(d.Imm & 0xFF) : (ushort)c._gpr[2];
            int size = d.SrcSize;
            if (!c.CheckIoPermission(port, size)) return;
            c.PortOut(port, size, c.ReadReg(d.Reg1));
        });
    }

    internal bool CheckIoPermission(ushort port, int size)
    {
        if (!ProtectedMode || (!V86Mode && _cpl <= (int)((_eflags >> 12) & 3)))
        {
            return true;
        }
        // Only a 32-bit TSS has a bitmap; its base is the word at offset 0x66 (SDM vol. 3, 7.2.1).
        if ((_tr.Type & 8) == 0 || _tr.Limit < 0x67)
        {
            Fault(Vector.GP, 0);
            return false;
        }
        uint mapBase = ReadLinSystem(_tr.Base + 0x66, 2);
        if (Faulted) return false;
        uint byteOffset = mapBase + ((uint)port >> 3);
        if (byteOffset + 1 > _tr.Limit)
        {
            Fault(Vector.GP, 0);
            return false;
        }
        uint bits = ReadLinSystem(_tr.Base + byteOffset, 2);
        if (Faulted) return false;
        uint mask = ((1u << size) - 1) << (port & 7);
        if ((bits & mask) != 0)
        {
            Fault(Vector.GP, 0);
            return false;
        }
        return true;
    }

    internal uint PortIn(ushort port, int size)
    {
        _exit.Port = port;
        _exit.Size = (byte)size;
        _exit.Value = SizeMask(size);
        RaiseExit(ExitKind.IoIn);
        return (uint)_exit.Value & SizeMask(size);
    }

    internal void PortOut(ushort port, int size, uint value)
    {
        _exit.Port = port;
        _exit.Size = (byte)size;
        _exit.Value = value & SizeMask(size);
        RaiseExit(ExitKind.IoOut);
    }
}
