# The accelerator probe's boot sector: what a guest's boot loader does first
# (syslinux, for one). It enters 32-bit protected mode, takes an interrupt and
# returns from it with IRET, then reports success on QEMU's debug console
# (port 0x402). Where nested KVM cannot run this (it falls back to KVM's
# instruction emulator, which has no protected-mode IRET), QEMU stops with
# "KVM internal error" and a real guest would never boot.
#
# Rebuild accel-probe.bin after a change (a unit test checks they match):
#   as --32 accel-probe.S -o /tmp/p.o && ld -m elf_i386 -Ttext=0x7c00 --oformat binary /tmp/p.o -o accel-probe.bin
        .code16
        .globl _start
_start:
        cli
        xor %ax, %ax
        mov %ax, %ds
        mov %ax, %ss
        mov $0x7c00, %sp
        lgdtl gdt_desc
        mov %cr0, %eax
        or $1, %eax
        mov %eax, %cr0
        ljmpl $0x08, $protected
        .code32
protected:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $0x7c00, %esp
        # An interrupt gate for vector 0x20 pointing at `handler`.
        mov $handler, %eax
        mov %ax, idt + 0x20 * 8
        movw $0x08, idt + 0x20 * 8 + 2
        movw $0x8e00, idt + 0x20 * 8 + 4
        shr $16, %eax
        mov %ax, idt + 0x20 * 8 + 6
        lidt idt_desc
        int $0x20
        mov $message, %esi
        mov $0x402, %dx
1:      lodsb
        test %al, %al
        jz 2f
        outb %al, %dx
        jmp 1b
2:      hlt
        jmp 2b
handler:
        iret
        .p2align 3
gdt:    .quad 0
        .quad 0x00cf9a000000ffff        # flat 32-bit code
        .quad 0x00cf92000000ffff        # flat data
gdt_desc:
        .word gdt_desc - gdt - 1
        .long gdt
idt_desc:
        .word 0x20 * 8 + 7
        .long idt
message:
        .asciz "vmcloud accelerator probe passed\n"
        .org 510
        .word 0xaa55
# Free low memory for the interrupt table: only vector 0x20 is set, and
# interrupts stay off.
idt = 0x1000
