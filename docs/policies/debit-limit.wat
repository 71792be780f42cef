;; A per-debit limit by role: `debit_budget` of more than 500 is denied
;; unless the actor is `finance`. Bind it with
;;   agentlog sandbox register debit-limit.wat --name debit-limit --kind policy
;;   agentlog sandbox bind debit_budget <module_hash>
;; (It searches the input's JSON text, which is enough for a sketch; a
;; policy written in a language with a JSON parser reads it properly.)
(module
  (memory (export "memory") 4)
  (data (i32.const 0) "\"amount\":")
  (data (i32.const 16) "\"actor\":\"finance\"")
  (data (i32.const 48) "allow")
  (data (i32.const 64) "deny a debit over 500 needs the finance role")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  ;; Where the bytes $n..$n+$nl first occur in $h..$h+$hl, or -1.
  (func $find (param $h i32) (param $hl i32) (param $n i32) (param $nl i32) (result i32)
    (local $i i32) (local $j i32)
    (loop $outer
      (if (i32.gt_s (i32.add (local.get $i) (local.get $nl)) (local.get $hl))
        (then (return (i32.const -1))))
      (local.set $j (i32.const 0))
      (block $mismatch
        (loop $inner
          (if (i32.eq (local.get $j) (local.get $nl))
            (then (return (local.get $i))))
          (br_if $mismatch
            (i32.ne (i32.load8_u (i32.add (local.get $h) (i32.add (local.get $i) (local.get $j))))
                    (i32.load8_u (i32.add (local.get $n) (local.get $j)))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br $inner)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $outer))
    (i32.const -1))

  ;; The decimal number at $p (its digits before $end), or 0.
  (func $number (param $p i32) (param $end i32) (result i64)
    (local $v i64) (local $c i32)
    (block $done
      (loop $digits
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))
        (br_if $done (i32.gt_u (local.get $c) (i32.const 9)))
        (local.set $v (i64.add (i64.mul (local.get $v) (i64.const 10)) (i64.extend_i32_u (local.get $c))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $digits)))
    (local.get $v))
  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $at i32)
    (local.set $at (call $find (local.get $ptr) (local.get $len) (i32.const 0) (i32.const 9)))
    (if (i32.ge_s (local.get $at) (i32.const 0))
      (then
        (if (i64.gt_u
              (call $number (i32.add (local.get $ptr) (i32.add (local.get $at) (i32.const 9)))
                            (i32.add (local.get $ptr) (local.get $len)))
              (i64.const 500))
          (then
            (if (i32.lt_s (call $find (local.get $ptr) (local.get $len) (i32.const 16) (i32.const 17)) (i32.const 0))
              (then (return (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 44)))))))))
    (i64.or (i64.shl (i64.const 48) (i64.const 32)) (i64.const 5))))
