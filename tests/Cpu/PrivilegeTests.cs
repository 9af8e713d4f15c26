using Iced.Intel;
using SecureVmm.Tcb.Cpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;
using F = SecureVmm.Tests.Cpu.SystemFixture;

namespace SecureVmm.Tests.Cpu;

/// <summary>Privilege levels: IRET to ring 3, TSS stack switch on interrupts, IOPL and the I/O bitmap, POPF, SYSENTER/SYSEXIT.</summary>
public class PrivilegeTests
{
    public const uint UserCodeAddress = 0x3_0000;

    /// <summary>Boots to ring 0, then IRETs to ring 3 code built by <paramref name="user"/>.</summary>
    private static CpuHarness BootToUser(Action<Assembler> user, uint userEflags = 0x2, Action<CpuHarness>? setup = null)
    {
        var h = new CpuHarness();
        F.Install(h);
        for (int v = 0; v < 32; v++)
        {
            F.RecordingHandler(h, v);
        }
        setup?.Invoke(h);
        h.Load(UserCodeAddress, CpuHarness.Assemble(32, UserCodeAddress, user));
        h.Load32(0x1000, a =>
        {
            F.Prologue(a);
            a.push(F.UserData);
            a.push(F.UserStack);
            a.push(userEflags);
            a.push(F.UserCode);
            a.push(UserCodeAddress);
            a.iretd();
        });
        return h;
    }

    [Fact]
    public void IretToRing3AndSystemCallGateSwitchesToTheTssStack()
    {
        using var h = BootToUser(a =>
        {
            a.mov(eax, 0x1234);
            a.@int(0x80);
        }, setup: h =>
        {
            F.WriteU64(h, F.Idt + 0x80 * 8, F.Gate(F.KernelCode, F.HandlerBase + 0x80 * 0x100, 0xE, 3));
            F.RecordingHandler(h, 0x80);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0x80u, F.Rec(h, 0));
        Assert.Equal(UserCodeAddress + 7, F.Rec(h, 1));   // EIP after INT 80h (mov eax,imm32 = 5 bytes, int = 2)
        Assert.Equal((uint)F.UserCode, F.Rec(h, 2));
        Assert.Equal(F.UserStack, F.Rec(h, 4));            // old ESP
        Assert.Equal((uint)F.UserData, F.Rec(h, 5));       // old SS
        Assert.Equal(F.KernelStack - 20, F.Rec(h, 6));     // ring-0 stack from TSS.ESP0
        Assert.Equal(0, h.Cpu.Cpl);
    }

    [Fact]
    public void GateWithDplBelowCplIsGeneralProtection()
    {
        using var h = BootToUser(a => a.@int(0x81), setup: h =>
        {
            F.WriteU64(h, F.Idt + 0x81 * 8, F.Gate(F.KernelCode, F.HandlerBase, 0xE, 0));
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(13u, F.Rec(h, 0));
        Assert.Equal(0x81u * 8 + 2, F.Rec(h, 1));          // IDT-referencing error code
        Assert.Equal(UserCodeAddress, F.Rec(h, 2));        // fault on the INT itself
    }

    [Fact]
    public void CliAndPrivilegedInstructionsFaultInRing3()
    {
        using var h = BootToUser(a => a.cli());
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(13u, F.Rec(h, 0));
        using var h2 = BootToUser(a => a.mov(cr3, eax));
        Assert.Equal(RunStatus.Stopped, h2.Run());
        Assert.Equal(13u, F.Rec(h2, 0));
        using var h3 = BootToUser(a => a.hlt());
        Assert.Equal(RunStatus.Stopped, h3.Run());
        Assert.Equal(13u, F.Rec(h3, 0));
    }

    [Fact]
    public void IoPermissionBitmapAllowsOnlyClearedPorts()
    {
        // Bitmap at TSS+0x68: all ports denied except 0x3F8-0x3FF and 0xF4.
        using var h = BootToUser(a =>
        {
            a.mov(dx, 0x3F8);
            a.mov(al, (byte)'u');
            a.@out(dx, al);
            a.mov(dx, 0x60);
            a.@in(al, dx);                                   // denied -> #GP(0)
        }, setup: h =>
        {
            var bitmap = new byte[0x2000];
            Array.Fill(bitmap, (byte)0xFF);
            bitmap[0x3F8 / 8] = 0;
            bitmap[0xF4 / 8] &= unchecked((byte)~(1 << (0xF4 % 8)));
            h.Map.WriteRam(F.Tss + 0x68, bitmap);
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal("u", h.Serial.ToString());
        Assert.Equal(13u, F.Rec(h, 0));
        Assert.Equal(0u, F.Rec(h, 1));
    }

    [Fact]
    public void IoplThreeAllowsAllPortsAndCli()
    {
        using var h = BootToUser(a =>
        {
            a.cli();
            a.mov(dx, 0x60);
            a.@in(al, dx);
            a.Exit(0x55);
        }, userEflags: 0x3002);
        h.PortValues[0x60] = 0xAB;
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0x55u, h.DebugExitValue);
    }

    [Fact]
    public void PopfInRing3CannotChangeIoplOrIf()
    {
        using var h = BootToUser(a =>
        {
            a.mov(ax, F.UserData);
            a.mov(ds, ax);
            a.push(0x3202u);                   // IOPL 3, IF 1
            a.popfd();
            a.pushfd();
            a.pop(ebx);
            a.mov(__dword_ptr[0x9100], ebx);
            a.Exit(0x56);
        }, userEflags: 0x2, setup: h =>
        {
            var bitmap = new byte[0x2000];
            h.Map.WriteRam(F.Tss + 0x68, bitmap);           // all ports allowed for the exit
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0x56u, h.DebugExitValue);
        uint flags = h.ReadU32(0x9100);
        Assert.Equal(0u, flags & EflagsBits.IOPL);
        Assert.Equal(0u, flags & EflagsBits.IF);
    }

    [Fact]
    public void SysenterAndSysexitRoundTrip()
    {
        using var h = new CpuHarness();
        F.Install(h);
        // Kernel entry: record and return to user with SYSEXIT (EDX = EIP, ECX = ESP).
        F.Handler(h, 0x90, a =>
        {
            a.mov(ax, F.KernelData);
            a.mov(ds, ax);
            a.mov(__dword_ptr[0x9200], esp);
            a.mov(__dword_ptr[0x9204], 1u);
            a.mov(ax, ss);
            a.mov(__word_ptr[0x9208], ax);
            a.mov(edx, UserCodeAddress + 0x40);
            a.mov(ecx, F.UserStack - 0x100);
            a.sysexit();
        });
        h.Load(UserCodeAddress, CpuHarness.Assemble(32, UserCodeAddress, a => a.sysenter()));
        h.Load(UserCodeAddress + 0x40, CpuHarness.Assemble(32, UserCodeAddress + 0x40, a =>
        {
            a.mov(ax, cs);
            a.movzx(ebx, ax);
            a.mov(esi, esp);
            a.int3();                      // back to ring 0 through the #BP gate (DPL 0 -> #GP)
        }));
        F.RecordingHandler(h, 13);
        h.Load32(0x1000, a =>
        {
            F.Prologue(a);
            a.mov(ecx, 0x174);
            a.mov(eax, (uint)F.KernelCode);
            a.xor(edx, edx);
            a.wrmsr();
            a.mov(ecx, 0x175);
            a.mov(eax, 0x7_8000u);
            a.wrmsr();
            a.mov(ecx, 0x176);
            a.mov(eax, F.HandlerBase + 0x90 * 0x100);
            a.wrmsr();
            a.push(F.UserData);
            a.push(F.UserStack);
            a.push(0x2);
            a.push(F.UserCode);
            a.push(UserCodeAddress);
            a.iretd();
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0x7_8000u, h.ReadU32(0x9200));
        Assert.Equal((uint)F.KernelData, h.ReadU32(0x9208) & 0xFFFF);   // SS = SYSENTER_CS + 8
        Assert.Equal(13u, F.Rec(h, 0));
        Assert.Equal(0x1Bu, F.Rec(h, 3));                               // CS = SYSENTER_CS + 16 | 3
        Assert.Equal(F.UserStack - 0x100, F.Rec(h, 5));                 // ESP from ECX
    }

    [Fact]
    public void CallGateCopiesParametersAndFarReturnGoesBackToRing3()
    {
        // Call gate 0x38 (DPL 3, 2 dword parameters) to a ring-0 routine that sums them and RETFs 8.
        using var h = BootToUser(a =>
        {
            a.mov(ax, F.UserData);
            a.mov(ds, ax);
            a.push(0x1000);
            a.push(0x0234);
            a.call(0x38, 0);                  // far call through the gate (offset ignored)
            a.mov(__dword_ptr[0x9500], eax);
            a.mov(__dword_ptr[0x9504], esp);
            a.mov(ax, cs);
            a.mov(__word_ptr[0x9508], ax);
            a.@int(0x81);                     // DPL-0 gate: #GP ends the test
        }, setup: h =>
        {
            F.WriteU64(h, F.Gdt + 0x38, (F.HandlerBase + 0x90 * 0x100 & 0xFFFF) | ((ulong)F.KernelCode << 16)
                | (2UL << 32) | (0xECUL << 40) | ((ulong)((F.HandlerBase + 0x90 * 0x100) >> 16) << 48));
            F.Handler(h, 0x90, a =>
            {
                a.mov(eax, __dword_ptr[esp + 8]);    // parameters follow the return CS:EIP
                a.add(eax, __dword_ptr[esp + 12]);
                a.mov(ebx, __dword_ptr[esp + 16]);   // caller ESP
                a.mov(ecx, __dword_ptr[esp + 20]);   // caller SS
                a.mov(__dword_ptr[F.Record + 0x100], ebx);
                a.mov(__dword_ptr[F.Record + 0x104], ecx);
                a.retf(8);
            });
        });
        Assert.Equal(RunStatus.Stopped, h.Run());
        Assert.Equal(0x1234u, h.ReadU32(0x9500));
        Assert.Equal(F.UserStack - 8 + 8, h.ReadU32(0x9504));       // RETF 8 released the parameters
        Assert.Equal((uint)F.UserCode, h.ReadU32(0x9508) & 0xFFFF);
        Assert.Equal(F.UserStack - 8, h.ReadU32(F.Record + 0x100));
        Assert.Equal((uint)F.UserData, h.ReadU32(F.Record + 0x104));
        Assert.Equal(13u, F.Rec(h, 0));
    }
}
