-- Drops the debit refusal. Roll back together with the code of before (whose procedures do not read it):
-- `pgwallet migrate` of that code re-installs its procedures.
drop function if exists pgwallet.set_debit_refusal(bigint, text);
alter table pgwallet.accounts drop column if exists debit_refusal;
